"""γ and β of the norm layers over training (probe ``norm_params``): contours and trajectory statistics.

- one contour figure per (variant, parameter) with a panel per norm layer
  (``ablab.report.norm_figures.contour_figure``) for every seed: the first shown, the others folded;
- trajectory statistics (``ablab.analysis.trajectories``) as mean ± SD over the finished seeds,
  with every run's statistics in a CSV beside.

γ/β artifacts are read one run at a time (a 350-epoch run records ~10⁴ steps) and reduced to
their statistics at once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablab.analysis.trajectories import PARAMS, STATS, aggregate_over_seeds, trajectory_stats
from ablab.artifacts import NORM_PARAMS_FILE
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.figures import shorten
from ablab.report.html import e, figure_html, swatch
from ablab.report.norm_figures import SYMBOL, plot_contours
from ablab.report.numbers import is_scientific
from ablab.report.tables import format_mean_sd
from ablab.files import write_atomic

TOL = 0.05  # "within ±tol" of the neutral value for the whole run
_CSS = "table.traj td.param { text-align: center; }\n"
_STAT_TITLES = {
    "final_mean": "final mean", "final_median": "final median", "activity": "activity",
    "crossings": "crossings / feature", "within_tol": "within ±tol",
}
_STAT_COLUMNS = ["run", "label", "replicate", "status", "layer", "param", "features", "learnable", "steps", *STATS]


@REPORT_SECTIONS.register("norm_params")
class NormParams(ReportSection):
    """γ and β of every norm layer over training: contours per variant and trajectory statistics."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(ctx.runs_with(NORM_PARAMS_FILE))

    def render(self, ctx: ReportContext) -> PagePart:
        part = PagePart("", css=_CSS)
        contours, stats = _contours_and_stats(ctx, part)
        part.html = "\n".join(["<h2>Normalization layers: γ and β</h2>", contours, _trajectory_html(ctx, stats, part)])
        return part


def _contours_and_stats(ctx: ReportContext, part: PagePart) -> tuple[str, pd.DataFrame]:
    """Contour figures of every seed (the first shown, the others folded), and every run's trajectory statistics."""
    mine = ctx.runs[ctx.runs["run"].isin(ctx.runs_with(NORM_PARAMS_FILE))].sort_values("replicate", kind="stable")
    index = {label: i for i, label in enumerate(dict.fromkeys(ctx.runs["label"]))}
    figures: dict[str, list[list[str]]] = {}  # label → per seed, its figures
    frames = []
    for row in mine.itertuples():
        loaded = ctx.artifact(row.run, NORM_PARAMS_FILE)
        if loaded is None:
            continue
        frames.append(trajectory_stats(*loaded, tol=TOL).assign(
            run=row.run, label=row.label, replicate=row.replicate, status=row.status))
        figures.setdefault(row.label, []).append(_contour_figures(ctx, row, loaded, index[row.label], part))
    html = [
        "<h3>γ and β over training</h3>",
        "<p class=\"note\">One figure per variant and parameter, a panel per norm layer: x the features "
        "sorted by their final value, y the training step, colour the value (blue below, red above the "
        "neutral value: γ = 1, β = 0) on one symmetric scale shared by all layers of the figure, so "
        "figures of different variants have different scales. The first seed of each variant is shown; "
        "the other seeds are folded below it. A parameter that no layer learns is not drawn. Click a "
        "figure for its full size.</p>",
    ]
    for label in index:  # variant order, whatever the run order
        seeds = [f for f in figures.get(label, []) if f]
        if seeds:
            html += seeds[0]
        if len(seeds) > 1:
            html.append(f"<details><summary>Other seeds of {e(label)} ({len(seeds) - 1})</summary>\n"
                        + "\n".join(f for seed in seeds[1:] for f in seed) + "\n</details>")
    if not any(figures.values()):
        html.append("<p class=\"note\">No variant learns γ or β.</p>")
    stats = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_STAT_COLUMNS)
    head = ["run", "label", "replicate", "status"]
    return "\n".join(html), stats[head + [c for c in stats.columns if c not in head]]


def _contour_figures(ctx: ReportContext, row, loaded, index: int, part: PagePart) -> list[str]:
    """γ and β contours of one run (those some layer learns), as ``<figure>`` elements."""
    html = []
    for param in PARAMS:
        name = f"bn_contour_{index:02d}_r{int(row.replicate):02d}_{param}.png"
        path = ctx.figure_path(name)
        title = f"{SYMBOL[param]}: {shorten(row.label, 80)} (replicate {int(row.replicate)}, {row.status})"
        if plot_contours(*loaded, param, title, path):
            part.figures.append(path)
            caption = (f"{e(SYMBOL[param])} of {e(row.label)}, replicate {e(int(row.replicate))} "
                       f"(run <code>{e(row.run)}</code>)")
            html.append(figure_html(name, f"{SYMBOL[param]} contours of {row.label}", caption))
    return html


def _trajectory_html(ctx: ReportContext, per_run: pd.DataFrame, part: PagePart) -> str:
    done = per_run[per_run["status"] == "done"]
    summary = aggregate_over_seeds(done, by="label")
    part.tables += _write_files(ctx, per_run, summary)
    shown = summary[summary["learnable"].astype(bool)]
    head = "".join(f"<th>{e(h)}</th>" for h in ["variant", "layer", "param", "features", "n",
                                                 *(_STAT_TITLES[s] for s in STATS)])
    body = []
    sci = {s: is_scientific(shown[f"{s}.mean"]) for s in STATS}
    for _, row in shown.iterrows():
        n = int(row["n"])
        cells = [f"<td>{swatch(ctx.colours, row['label'])}{e(row['label'])}</td>", f"<td>{e(row['layer'])}</td>",
                 f"<td class=\"param\">{e(SYMBOL.get(row['param'], row['param']))}</td>",
                 f"<td class=\"num\">{e(int(row['features']))}</td>", f"<td class=\"num\">{n}</td>"]
        cells += [f"<td class=\"num\">{e(format_mean_sd(row[f'{s}.mean'], row[f'{s}.sd'], n, n, sci[s]))}</td>" for s in STATS]
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = (f"<table class=\"traj\"><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>") if body else (
        "<p class=\"note\">No learned γ or β in a finished run.</p>")
    return (
        "<h3>Trajectory statistics</h3>\n"
        "<p class=\"note\">Per variant, norm layer and learned parameter, mean ± SD over the finished seeds "
        "(n), rounded to the second significant digit of the standard error SD/√n: the final mean and "
        "median over features; activity, the mean |γ − 1| or |β| at the end; "
        "crossings, how often a feature's trajectory changes sides of the neutral value (1 for γ, 0 for β; "
        "touching it is no crossing), averaged over features; within ±tol, the fraction of features that "
        f"stay within {e(f'{TOL:g}')} of the neutral value for the whole run.</p>\n"
        + table + "\n"
        + "".join(f"<p class=\"note\">{n}</p>\n" for n in _notes(per_run, done, summary))
        + "<p class=\"note\">Also as <a href=\"tables/trajectories.csv\">CSV</a> (per variant) and "
        "<a href=\"tables/trajectories_runs.csv\">CSV per run</a>.</p>"
    )


def _notes(per_run: pd.DataFrame, done: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """What the table leaves out: frozen parameters, variants without a finished seed (escaped)."""
    notes = []
    frozen = summary[~summary["learnable"].astype(bool)]
    if len(frozen):
        notes.append(f"{len(frozen)} frozen (variant, layer, parameter) rows are left out: a frozen γ or β is "
                     "exactly 1 or 0 throughout (activity 0, no crossings); the CSV keeps them.")
    skipped = sorted(set(per_run["label"]) - set(done["label"])) if len(per_run) else []
    if skipped:
        notes.append("Variants without a finished seed: " + ", ".join(e(s) for s in skipped) + ".")
    return notes


def _write_files(ctx: ReportContext, per_run: pd.DataFrame, summary: pd.DataFrame) -> list[Path]:
    runs_csv, summary_csv = ctx.table_path("trajectories_runs.csv"), ctx.table_path("trajectories.csv")
    write_atomic(runs_csv, to_csv(per_run.assign(tol=TOL)).encode())
    write_atomic(summary_csv, to_csv(summary.assign(tol=TOL)).encode())
    return [runs_csv, summary_csv]
