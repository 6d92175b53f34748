"""The compute budget per variant: epochs, steps and gradient evaluations from each run's plan, mean time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ablab.labels import plural
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.html import e
from ablab.report.tables import MISSING

PLAN = ("epochs", "steps", "gradient_evaluations")  # keys of a run's ``info`` that the table shows


@REPORT_SECTIONS.register("budget")
class Budget(ReportSection):
    """Epochs, steps and gradient evaluations per variant (from the runs' plans) and the mean run time."""

    def applies(self, ctx: ReportContext) -> bool:
        return any(k in info for info in _infos(ctx.runs) for k in PLAN)

    def render(self, ctx: ReportContext) -> PagePart:
        rows, costly = [], False
        for label, group in ctx.runs.groupby("label", sort=False):
            infos = _infos(group)
            costly |= any(_more_evaluations_than_steps(i) for i in infos)
            cells = [_span([i.get(k) for i in infos]) for k in PLAN]
            seconds = pd.to_numeric(group["duration_s"], errors="coerce") if "duration_s" in group else pd.Series()
            mean_s = f"{seconds.mean():.1f}" if seconds.notna().any() else MISSING
            rows.append(f"<tr><td>{e(label)}</td><td class=\"num\">{len(group)}</td>"
                        + "".join(f"<td class=\"num\">{e(c)}</td>" for c in cells)
                        + f"<td class=\"num\">{mean_s}</td></tr>")
        note = ("<p class=\"note\">From each run's plan: a step can cost more than one gradient evaluation "
                "(SAM: two), so under <code>budget_epochs</code> such runs take fewer steps.</p>\n") if costly else ""
        return PagePart(
            "<h2>Compute budget</h2>\n"
            f"<details><summary>Compute budget per variant ({plural(len(rows), 'variant')})</summary>\n{note}"
            "<table class=\"budget\"><tr><th>variant</th><th>runs</th><th>epochs</th><th>steps</th>"
            "<th>gradient evaluations</th><th>mean time (s)</th></tr>\n" + "\n".join(rows) + "\n</table></details>"
        )


def _infos(runs: pd.DataFrame) -> list[dict[str, Any]]:
    return [i if isinstance(i, dict) else {} for i in runs["info"]] if "info" in runs else []


def _more_evaluations_than_steps(info: dict[str, Any]) -> bool:
    steps, evals = info.get("steps"), info.get("gradient_evaluations")
    return isinstance(steps, (int, float)) and isinstance(evals, (int, float)) and evals > steps


def _span(values: list[Any]) -> str:
    """``100`` when every run agrees, ``50–100`` when they differ, — when none recorded it."""
    known = sorted({int(v) for v in values if isinstance(v, (int, float)) and np.isfinite(v)})
    if not known:
        return MISSING
    return str(known[0]) if len(known) == 1 else f"{known[0]}–{known[-1]}"
