"""Accuracy against label-smoothing strength, clean and under each recorded attack (seed 002 Fig. 3.2 left).

The runs are those trained with the plain ``standard`` objective (clean training, as the figure) whose loss
is ``cross_entropy``; s is its ``smoothing`` (the seed's convention, Eq. 3.8; 0 where not set). Each point is
the mean over a strength's runs at the report's selected epoch, with ± 1 SD as a bar; the numbers are also
a CSV (s, metric, mean, SD, n).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablab.files import write_atomic
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.figures import new_figure, save_png
from ablab.report.html import e, figure_html
from ablab.report.sections.robustness import SPLIT, robust_labels

FIGURE, TABLE = "accuracy_vs_smoothing.png", "accuracy_vs_smoothing.csv"


def smoothing_of(spec: dict) -> float | None:
    """s of Eq. 3.8 for a clean-training cross-entropy run; None for any other run."""
    objective, loss = spec.get("objective") or {}, spec.get("loss") or {}
    name = objective.get("name") if isinstance(objective, dict) else objective
    if name != "standard" or not isinstance(loss, dict) or loss.get("name") != "cross_entropy":
        return None
    return float(loss.get("smoothing", 0.0))


def smoothing_points(ctx: ReportContext) -> pd.DataFrame:
    """One row per (s, metric): mean, SD (ddof 1; NaN for one run) and n over the runs at strength s."""
    strengths = {r: smoothing_of(s) for r, s in zip(ctx.runs["run"], ctx.runs["spec"])}
    per_run = ctx.per_run.assign(s=ctx.per_run["run"].map(strengths)).dropna(subset=["s"])
    refs = [c for c in [f"{SPLIT}.accuracy"] + [f"{SPLIT}.{lb}_accuracy" for lb in robust_labels(per_run.columns)]
            if c in per_run.columns]
    rows = []
    for s, group in per_run.groupby("s"):
        for ref in refs:
            values = group[ref].dropna().to_numpy(dtype=float)
            if len(values):
                rows.append({"s": s, "metric": ref, "mean": values.mean(),
                             "sd": values.std(ddof=1) if len(values) > 1 else np.nan, "n": len(values)})
    return pd.DataFrame(rows, columns=["s", "metric", "mean", "sd", "n"])


@REPORT_SECTIONS.register("label_smoothing")
class LabelSmoothing(ReportSection):
    """Clean and robust accuracy against label-smoothing strength s, clean training (seed 002 Fig. 3.2 left)."""

    def applies(self, ctx: ReportContext) -> bool:
        if not len(ctx.runs) or "spec" not in ctx.runs:
            return False
        strengths = {smoothing_of(s) for s in ctx.runs["spec"]} - {None}
        return len(strengths) >= 2

    def render(self, ctx: ReportContext) -> PagePart:
        points = smoothing_points(ctx)
        head = "<h2>Accuracy against label smoothing</h2>\n"
        if points["s"].nunique() < 2:
            return PagePart(head + "<p class=\"note\">Fewer than two smoothing strengths have results.</p>")
        table, figure = ctx.table_path(TABLE), ctx.figure_path(FIGURE)
        write_atomic(table, to_csv(points).encode())
        plot_points(points, figure)
        note = ("<p class=\"note\">Test accuracy (%) of the runs trained with the standard objective, against the "
                "label-smoothing strength s of seed 002 Eq. 3.8 (1 − s on the true class, s/(C − 1) elsewhere), "
                f"clean and under each recorded attack; mean ± SD over runs, {e(ctx.rule)}. As seed 002 Fig. 3.2 "
                f"(left). Also as <a href=\"tables/{TABLE}\">CSV</a>.</p>\n")
        return PagePart(head + note + figure_html(FIGURE, "accuracy against label-smoothing strength"),
                        figures=[figure], tables=[table])


def plot_points(points: pd.DataFrame, path) -> None:
    """One line per metric (clean, then each attack), mean ± SD bars, accuracy in %."""
    fig = new_figure(figsize=(6.5, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for metric, group in points.groupby("metric", sort=False):
        group = group.sort_values("s")
        name = metric[len(SPLIT) + 1:].removesuffix("_accuracy")
        ax.errorbar(group["s"], 100 * group["mean"], yerr=100 * group["sd"].fillna(0.0), marker="o", capsize=3,
                    label="clean" if name == "accuracy" else name)
    ax.set_xlabel("label smoothing s (Eq. 3.8)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    save_png(fig, path)
