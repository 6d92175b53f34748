"""Diverged and failed runs: which, where they stopped, and the error with its traceback."""

from __future__ import annotations

import pandas as pd

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.html import e, swatch


@REPORT_SECTIONS.register("problems")
class Problems(ReportSection):
    """Every diverged or failed run: its variant, replicate, id and error (traceback folded), or None."""

    def render(self, ctx: ReportContext) -> PagePart:
        bad = ctx.runs[ctx.runs["status"].isin(("diverged", "failed"))]
        if bad.empty:
            return PagePart("<h2>Diverged and failed runs</h2>\n<p>None.</p>")
        last_epochs = ctx.metrics.groupby("run")["epoch"].max() if len(ctx.metrics) else pd.Series(dtype=int)
        rows = []
        for _, run in bad.iterrows():
            what, detail = _what_went_wrong(run, last_epochs)
            rows.append(
                f"<tr><td>{swatch(ctx.colours, run['label'])}{e(run['label'])}</td>"
                f"<td class=\"num\">{e(run['replicate'])}</td><td><code>{e(run['run'])}</code></td>"
                f"<td class=\"flag\">{e(run['status'])}</td><td>{what}{detail}</td></tr>"
            )
        return PagePart(
            "<h2>Diverged and failed runs</h2>\n<table><tr><th>variant</th><th>replicate</th><th>run</th>"
            "<th>status</th><th>error</th></tr>\n" + "\n".join(rows) + "\n</table>"
        )


def _what_went_wrong(run: pd.Series, last_epochs: pd.Series) -> tuple[str, str]:
    """(one line, the folded traceback or ""), escaped."""
    error = run.get("error")
    if isinstance(error, str) and error.strip():
        return e(_last_line(error)), f"<details><summary>traceback</summary><pre>{e(error)}</pre></details>"
    if run["status"] == "diverged" and run["run"] in last_epochs:
        return f"non-finite values at epoch {int(last_epochs[run['run']])}", ""
    return "no error recorded", ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
