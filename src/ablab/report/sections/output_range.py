"""A norm layer's normalized output range in training vs evaluation against the bound √(B − 1) (probe
``output_range``; seed 002, Eq. 4.2 and Fig. A.1)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablab.artifacts import OUTPUT_RANGE_FILE
from ablab.registry import REPORT_SECTIONS
from ablab.files import write_atomic
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.figures import new_figure, plain_text, save_png, shorten
from ablab.report.html import e, figure_html
from ablab.report.numbers import MISSING

FIGURE = "output_range.png"
TABLE = "output_range.csv"


def range_rows(ctx: ReportContext) -> pd.DataFrame:
    """One row per run: its last training record (B, min, max of x̂, the bound) and its last evaluation's range."""
    rows = []
    mine = ctx.runs[ctx.runs["run"].isin(ctx.runs_with(OUTPUT_RANGE_FILE))]
    for run in mine.itertuples():
        loaded = ctx.artifact(run.run, OUTPUT_RANGE_FILE)
        if loaded is None:
            continue
        a, meta = loaded
        last_train = len(a["train_steps"]) - 1
        last_eval = len(a["eval_steps"]) - 1
        b = int(a["train_B"][last_train]) if last_train >= 0 else 0
        rows.append({
            "variant": run.label, "run": run.run, "layer": meta.get("layer", ""), "B": b,
            "bound": math.sqrt(b - 1) if b > 0 else math.nan,
            "train_min": float(a["train_min"][last_train]) if last_train >= 0 else math.nan,
            "train_max": float(a["train_max"][last_train]) if last_train >= 0 else math.nan,
            "eval_min": float(a["eval_min"][last_eval]) if last_eval >= 0 else math.nan,
            "eval_max": float(a["eval_max"][last_eval]) if last_eval >= 0 else math.nan,
        })
    return pd.DataFrame(rows)


def plot_ranges(rows: pd.DataFrame, colours: dict[str, str], path: Path) -> None:
    """Fig. A.1's form: x̂'s training and evaluation extremes per run against log₂ B, with ±√(B − 1)."""
    fig = new_figure(figsize=(7.5, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    bs = np.unique(rows["B"][rows["B"] > 0])
    if len(bs):
        grid = np.geomspace(max(2, bs.min() / 2), bs.max() * 2, 100)
        ax.plot(np.log2(grid), np.sqrt(grid - 1), color="black", lw=1, label="bound ±√(B−1) (Eq. 4.2)")
        ax.plot(np.log2(grid), -np.sqrt(grid - 1), color="black", lw=1)
    for label, part in rows.groupby("variant", sort=False):
        x = np.log2(part["B"].clip(lower=1))
        colour = colours.get(label, "grey")
        ax.scatter(x, part["train_max"], color=colour, marker="^", s=18, label=plain_text(shorten(f"{label}: train")))
        ax.scatter(x, part["train_min"], color=colour, marker="v", s=18)
        ax.scatter(x + 0.08, part["eval_max"], edgecolors=colour, facecolors="none", marker="o", s=22,
                   label=plain_text(shorten(f"{label}: eval")))
        ax.scatter(x + 0.08, part["eval_min"], edgecolors=colour, facecolors="none", marker="o", s=22)
    ax.set_xlabel("log₂ B (elements per training statistic)")
    ax.set_ylabel("(y − β)/γ")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_png(fig, path)


@REPORT_SECTIONS.register("output_range")
class OutputRange(ReportSection):
    """A norm layer's output range in training vs evaluation against the bound ±√(B−1) (seed 002 Fig. A.1)."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(ctx.runs_with(OUTPUT_RANGE_FILE))

    def render(self, ctx: ReportContext) -> PagePart:
        rows = range_rows(ctx)
        head = "<h2>Norm output range: training vs evaluation</h2>\n"
        if rows.empty:
            return PagePart(head + "<p class=\"note\">No run's output-range record could be read.</p>")
        path, table = ctx.figure_path(FIGURE), ctx.table_path(TABLE)
        plot_ranges(rows, ctx.colours, path)
        write_atomic(table, to_csv(rows).encode())
        inside = (rows[["train_min", "train_max"]].abs().max(axis=1) <= rows["bound"] * (1 + 1e-5)).sum()
        outside = (rows[["eval_min", "eval_max"]].abs().max(axis=1) > rows["bound"]).sum()
        cells = "".join(
            f"<tr><td>{e(r.variant)}</td><td>{e(r.layer)}</td><td>{r.B}</td><td>{_cell(r.bound)}</td>"
            f"<td>{_cell(r.train_min)} … {_cell(r.train_max)}</td><td>{_cell(r.eval_min)} … {_cell(r.eval_max)}</td></tr>"
            for r in rows.itertuples())
        return PagePart(
            head + "<p class=\"note\">Probe output_range: x̂ = (y − β)/γ of one norm layer. In training "
            "|x̂| ≤ √(B−1), with B the elements of one statistic (batch × H × W for BatchNorm, ghost size × H × W "
            "for ghost BN; seed 002, Eq. 4.2 and App. A); in evaluation (moving averages) no bound holds "
            f"(Fig. A.1). Last record of each run: {inside} of {len(rows)} runs inside the bound in training, "
            f"{outside} outside it in evaluation.</p>\n"
            + figure_html(FIGURE, "output range against the bound")
            + "<table><tr><th>variant</th><th>layer</th><th>B</th><th>√(B−1)</th><th>train x̂</th>"
            f"<th>eval x̂</th></tr>{cells}</table>",
            figures=[path], tables=[table],
        )


def _cell(value: float) -> str:
    return MISSING if not math.isfinite(value) else f"{value:.3f}"
