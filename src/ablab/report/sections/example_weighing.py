"""Seed 002 ch. 4: inference example weighing over stored runs, α curves, ghost size, α × B′, Table 4.1."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablab.analysis.weighing import GHOST_LIKE, alpha_curves, alpha_ghost_grid, alpha_tuned, table_4_1, weighing_frame
from ablab.files import write_atomic
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.figures import new_figure, plain_text, save_png, variant_colours
from ablab.report.html import e, figure_html
from ablab.report.numbers import format_fixed

CURVES, TABLE = "example_weighing_alpha.csv", "example_weighing_table_4_1.csv"
ALPHA_FIG, GHOST_FIG, GRID_FIG = "example_weighing_alpha.png", "example_weighing_ghost.png", "example_weighing_grid.png"


@REPORT_SECTIONS.register("example_weighing")
class ExampleWeighing(ReportSection):
    """Inference example weighing (seed 002, Eq. 4.3): accuracy and loss vs α, vs B′, α × B′ and Table 4.1's analogue."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(len(ctx.metrics) and ctx.metrics["name"].eq("weighed_accuracy").any() and "spec" in ctx.runs)

    def render(self, ctx: ReportContext) -> PagePart:
        frame = weighing_frame(ctx.runs, ctx.metrics)
        head = "<h2>Inference example weighing</h2>\n"
        if frame.empty:
            return PagePart(head + "<p class=\"note\">weighed_accuracy is recorded, but by no single-member post-hoc "
                            "unit with an α to plot it against.</p>\n")
        split = "test" if (frame["split"] == "test").any() else frame["split"].iloc[0]
        curves = alpha_curves(frame, split)
        thesis = _cifar100(ctx)
        table = table_4_1(frame, thesis)
        paths = [ctx.table_path(CURVES), ctx.table_path(TABLE)]
        write_atomic(paths[0], to_csv(curves).encode())
        write_atomic(paths[1], to_csv(table).encode())
        html = head + ("<p>Each stored run evaluated after training with its norm layers' statistics mixed by α "
                       "(seed 002, Eq. 4.3): μ = α·E[x] + (1 − α)·(moving average), the same for E[x²]; α = 0 is "
                       "ordinary eval-mode BatchNorm, α = 1 each example's own statistics. Mean over the source "
                       f"runs' replicates on the {e(split)} split.</p>\n")
        figures = [ctx.figure_path(ALPHA_FIG)]
        _alpha_figure(curves, figures[0])
        html += figure_html(ALPHA_FIG, "accuracy and loss vs alpha",
                            f"{e(split)} accuracy and loss vs α per model, as seed 002 Fig. 4.1 (BN-trained) and "
                            "Fig. 4.2 (GN-trained: α just below 1); error bars: SD over replicates.")
        ghosts = curves[curves["norm"].isin(GHOST_LIKE)]["ghost"].dropna().unique()
        tuned = alpha_tuned(frame)
        if len(ghosts) >= 2 and not tuned.empty:
            figures.append(ctx.figure_path(GHOST_FIG))
            _ghost_figure(tuned, figures[-1])
            html += figure_html(GHOST_FIG, "accuracy vs ghost size",
                                "Test accuracy vs ghost batch size B′ (BN at B′ = its batch) with α off and α tuned on validation, as seed "
                                "002 Fig. 4.3 (unimodal in B′ there).")
        grid = alpha_ghost_grid(frame, split=split)
        if grid.shape[0] >= 2 and grid.shape[1] >= 2:
            figures.append(ctx.figure_path(GRID_FIG))
            _grid_figure(grid, figures[-1])
            html += figure_html(GRID_FIG, "alpha by ghost size heatmap",
                                f"{e(split)} accuracy over α × B′ (ghost BN models; BN at B′ = its batch), as seed 002 Fig. 4.4: the gain "
                                "from α grows as B′ shrinks there.")
        html += _table_html(table, thesis)
        html += (f"<p class=\"note\">Also as CSV: <a href=\"tables/{CURVES}\">α curves</a>, "
                 f"<a href=\"tables/{TABLE}\">table</a>.</p>\n")
        return PagePart(html, figures=figures, tables=paths)


def _cifar100(ctx: ReportContext) -> bool:
    """Whether the source runs trained on CIFAR-100 (then the thesis' Table 4.1 is shown beside ours)."""
    for spec in ctx.runs["spec"]:
        for member in (spec or {}).get("members", []):
            data = member["spec"].get("data", {})
            return (data if isinstance(data, str) else data.get("name")) == "cifar100"
    return False


def _table_html(table: pd.DataFrame, thesis: bool) -> str:
    if table.empty:
        return ("<p class=\"note\">No Table 4.1 analogue: it needs α = 0 and a validation split beside the test "
                "split (base.eval_splits: [val, test]).</p>\n")
    header = ["model", "method", "B′", "α off: test acc. %", "α tuned on val: test acc. %", "tuned α (per run)", "n"]
    header += ["thesis α off", "thesis α on"] if thesis else []
    rows = []
    for r in table.itertuples():
        cells = [r.model, r.method, "—" if r.ghost is None or pd.isna(r.ghost) else str(int(r.ghost)),
                 _mean_sd(r.off, r.off_sd, r.n), _mean_sd(r.tuned, r.tuned_sd, r.n), r.alphas, str(r.n)]
        cells += [format_fixed(r.thesis_off, 1), format_fixed(r.thesis_tuned, 1)] if thesis else []
        rows.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    note = (" The thesis columns are seed 002 Table 4.1 (CIFAR-100, non-i.i.d. batches of 4 classes × 32, "
            "ResNet-18), where a row's method and B′ match." if thesis else "")
    return ("<h3>α off and α tuned (Table 4.1's analogue)</h3>\n<p>Per model: test accuracy with α off (α = 0; "
            "α = 1 for GroupNorm, LayerNorm and InstanceNorm, their ordinary evaluation) and at the α "
            "with the best validation accuracy of each run (seed 002 §4.4: α tuned on validation, applied on test); "
            f"mean ± SD over runs.{note}</p>\n<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>\n"
            + "\n".join(rows) + "\n</table>\n")


def _mean_sd(mean: float, sd: float, n: int) -> str:
    return format_fixed(mean, 2) if n < 2 or not np.isfinite(sd) else f"{mean:.2f} ± {sd:.2f}"


def _alpha_figure(curves: pd.DataFrame, path) -> None:
    models = list(dict.fromkeys(curves["model"]))
    colours = variant_colours(models)
    fig = new_figure(figsize=(10.4, 4.0), dpi=110)
    for i, (column, title) in enumerate((("accuracy", "accuracy"), ("loss", "loss (cross-entropy)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for model in models:
            part = curves[curves["model"] == model].sort_values("alpha")
            ax.errorbar(part["alpha"], part[column], yerr=part[f"{column}_sd"].fillna(0), marker="o", ms=3,
                        color=colours[model], label=plain_text(model), capsize=2)
        ax.set_xlabel("α (example weight)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    save_png(fig, path)


def _ghost_figure(tuned: pd.DataFrame, path) -> None:
    part = tuned[tuned["norm"].isin(GHOST_LIKE)].groupby("ghost")[["off", "tuned"]].mean().sort_index()
    fig = new_figure(figsize=(5.2, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(part.index, part["off"], marker="o", label="α off")
    ax.plot(part.index, part["tuned"], marker="s", label="α tuned on val")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ghost batch size B′")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def _grid_figure(grid: pd.DataFrame, path) -> None:
    fig = new_figure(figsize=(1.0 + 0.8 * grid.shape[1], 1.0 + 0.5 * grid.shape[0]), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(grid.shape[1]), [f"{a:g}" for a in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(int(g)) for g in grid.index])
    ax.set_xlabel("α")
    ax.set_ylabel("B′")
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label="accuracy")
    save_png(fig, path)
