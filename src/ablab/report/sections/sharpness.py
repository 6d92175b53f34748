"""Sharpness at the end of training against the final target metric, one point per finished run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablab.analysis.grids import axis_label, varied_axes
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.figures import new_figure, plain_text, save_png, variant_colours
from ablab.report.html import e, figure_html
from ablab.spec.models import ReportSettings

SHARPNESS = ("train.sam_sharpness", "train.hessian_top_eigenvalue")
FIGURE = "sharpness.png"


@REPORT_SECTIONS.register("sharpness")
class Sharpness(ReportSection):
    """SAM sharpness and the top Hessian eigenvalue at the end of training vs the final target metric."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(recorded_sharpness(ctx.metrics))

    def render(self, ctx: ReportContext) -> PagePart:
        refs = recorded_sharpness(ctx.metrics)
        target = _target(ctx.settings)
        head = "<h2>Sharpness at the end of training</h2>\n"
        path = ctx.figure_path(FIGURE)
        if not plot_sharpness(ctx.metrics, ctx.runs, ctx.per_run, refs, target, path):
            return PagePart(head + f"<p class=\"note\">{e(', '.join(refs))} recorded, but no finished run has both "
                        f"it and a final {e(target)} to plot against.</p>")
        return PagePart(
            head + f"<p class=\"note\">{e(', '.join(refs))} measured on fixed training batches after the last "
            f"step against the final {e(target)}; one point per finished run.</p>\n"
            + figure_html(FIGURE, f"sharpness vs final {target}"),
            figures=[path],
        )


def recorded_sharpness(metrics: pd.DataFrame) -> list[str]:
    """The sharpness metrics some run recorded, in ``SHARPNESS`` order."""
    if not len(metrics):
        return []
    recorded = set(metrics["split"] + "." + metrics["name"])
    return [r for r in SHARPNESS if r in recorded]


def _target(settings: ReportSettings) -> str:
    """What sharpness is plotted against: the metric of ``report.best``, else of the first grid, else test.loss."""
    if settings.best is not None:
        return settings.best.metric
    return settings.grids[0].metric if settings.grids else "test.loss"


def plot_sharpness(
    metrics: pd.DataFrame, runs: pd.DataFrame, per_run: pd.DataFrame, refs: list[str], target: str, path: Path
) -> bool:
    """One panel per sharpness metric: its value at the end of training vs ``target``, one point per run.

    Points are coloured by the ``objective`` axis (SAM or not) when the study varies it, else by variant; False
    (nothing written) when no finished run has both values.
    """
    if target not in per_run.columns:
        return False
    done = runs[runs["status"] == "done"]
    evals = metrics[metrics["run"].isin(done["run"])]
    groups, colours = _colour_groups(done)
    fig = new_figure(figsize=(5.2 * len(refs), 4.2), dpi=110)
    drawn = False
    for i, ref in enumerate(refs):
        split, _, name = ref.partition(".")
        rows = evals[(evals["split"] == split) & (evals["name"] == name)]
        x = rows.sort_values("step").groupby("run")["value"].last()
        y = per_run.set_index("run")[target]
        ax = fig.add_subplot(1, len(refs), i + 1)
        for group, members in groups.items():
            ids = [r for r in members if r in x.index and r in y.index]
            xs, ys = x.reindex(ids).to_numpy(dtype=float), y.reindex(ids).to_numpy(dtype=float)
            ok = np.isfinite(xs) & np.isfinite(ys)
            if ok.any():
                ax.scatter(xs[ok], ys[ok], s=18, alpha=0.8, color=colours[group], label=plain_text(group))
                drawn = True
        ax.set_xlabel(plain_text(f"{ref} (end of training)"))
        ax.set_ylabel(plain_text(f"final {target}"))
        ax.grid(True, alpha=0.3)
        if i == len(refs) - 1 and groups:
            ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if drawn:
        save_png(fig, path)
    return drawn


def _colour_groups(done: pd.DataFrame) -> tuple[dict[str, list[str]], dict[str, str]]:
    """run ids per colour group: the ``objective`` axis's values, else variants (one colour if many)."""
    by_objective = "objective" in varied_axes(done) if len(done) else False
    if by_objective:
        keys = [f"objective: {axis_label((a or {}).get('objective'))}" for a in done["axes"]]
    elif done["label"].nunique() <= 20:
        keys = list(done["label"])
    else:
        keys = ["run"] * len(done)
    groups: dict[str, list[str]] = {}
    for key, run in zip(keys, done["run"]):
        groups.setdefault(str(key), []).append(run)
    return groups, variant_colours(list(groups))
