"""The variants of the study: colour, axis values, number of runs and their statuses."""

from __future__ import annotations

import json
from typing import Any

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.html import e, swatch


@REPORT_SECTIONS.register("variants")
class Variants(ReportSection):
    """One row per variant: its colour in the figures, its axis values, its runs by status."""

    def render(self, ctx: ReportContext) -> PagePart:
        rows = []
        for label, group in ctx.runs.groupby("label", sort=False):
            counts = group["status"].value_counts()
            status = ", ".join(f"{e(s)} {int(counts[s])}" for s in counts.index)
            axes = axes_text(group["axes"].iloc[0]) if "axes" in group else ""
            rows.append(f"<tr><td>{swatch(ctx.colours, label)}{e(label)}</td><td>{axes}</td>"
                        f"<td class=\"num\">{len(group)}</td><td>{status}</td></tr>")
        return PagePart(
            "<h2>Variants</h2>\n<table><tr><th>variant</th><th>axes</th><th>runs</th><th>status</th></tr>\n"
            + "\n".join(rows) + "\n</table>"
        )


def axes_text(axes: Any) -> str:
    """``optimizer.lr = 0.1; sam = null``: a run's axis values, escaped."""
    if not isinstance(axes, dict) or not axes:
        return ""
    return "; ".join(f"{e(path)} = {e(_scalar(value))}" for path, value in axes.items())


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
