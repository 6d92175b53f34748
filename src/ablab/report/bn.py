"""Report section for norm layers (Dissecting BatchNorm, seed 001): γ/β contours, ReLU sparsity, statistics.

Written when runs recorded the ``norm_params`` or ``relu_sparsity`` probe:

- one contour figure per (variant, parameter) with a panel per norm layer, as in the thesis'
  Fig. 3.2 and 4.6-4.13: x the features sorted by their final value (§3.3.2), y the training
  step, colour the value on a diverging map centred at the neutral value (γ = 1, β = 0) with one
  symmetric scale shared by all layers of the figure; drawn from the first seed of each variant;
  a parameter frozen in every layer (γ of ``affine: beta``) gets no figure;
- the fraction of activations each ReLU zeroes over training, per layer and variant (§3.3.1);
- trajectory statistics (``ablab.analysis.trajectories``) as mean ± SD over the finished seeds.

Every string from the spec or the store is escaped.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ablab.report.html import Section
from ablab.artifacts import NORM_PARAMS_FILE, RELU_SPARSITY_FILE, load_npz
from ablab.analysis.trajectories import NEUTRAL, PARAMS, STATS, aggregate_over_seeds, finite_rows, trajectory_stats
from ablab.report.figures import (
    DIVERGED_STYLE,
    LINE_WIDTH,
    _plain_text,
    _save_png,
    _shorten,
    legend_name,
    panel_order,
)
from ablab.report.exact_csv import to_csv
from ablab.report.tables import format_mean_sd
from ablab.store import write_atomic

CMAP = "RdBu_r"  # diverging: blue below the neutral value, white at it, red above
SYMBOL = {"gamma": "γ", "beta": "β"}
MAX_ROWS = 400  # contour rows drawn per panel; longer trajectories are subsampled evenly (last row kept)
_LEVELS = 21
_STAT_TITLES = {
    "final_mean": "final mean", "final_median": "final median", "activity": "activity",
    "crossings": "crossings / feature", "within_tol": "within ±tol",
}


# ---- data for the figures ----------------------------------------------------------------------

def contour_matrix(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, feature order, values [T, C] with columns sorted by final value), finite steps only.

    The final value is the last recorded step before any non-finite one; ``order`` maps each
    plotted column to its feature index (column j shows feature ``order[j]``).
    """
    values = finite_rows(values)
    steps = np.asarray(steps)[: len(values)]
    if not len(values):
        return steps, np.arange(values.shape[1]), values
    order = np.argsort(values[-1], kind="stable")
    return steps, order, values[:, order]


def colour_limits(param: str, matrices: list[np.ndarray]) -> tuple[float, float]:
    """One symmetric range around the neutral value covering every matrix (all layers of a model)."""
    neutral = NEUTRAL[param]
    spans = [float(np.abs(m - neutral).max()) for m in matrices if m.size]
    half = max(spans, default=0.0) or 1e-3  # all neutral (frozen): a tiny range, drawn white
    return neutral - half, neutral + half


def _artifact(store: Any, run: str, name: str) -> Path:
    if hasattr(store, "artifact_path"):
        return Path(store.artifact_path(run, name))
    return Path(store.path) / "runs" / run / name


def _load(store: Any, run: str, name: str) -> tuple[dict[str, np.ndarray], dict] | None:
    path = _artifact(store, run, name)
    if not path.is_file():
        return None
    try:
        return load_npz(str(path))
    except (OSError, ValueError, KeyError):  # a damaged file shows as missing, not as a crash
        return None


# ---- figures -----------------------------------------------------------------------------------

def plot_contours(arrays: dict[str, np.ndarray], meta: dict, param: str, title: str, path: Path) -> bool:
    """Write ``contour_figure`` as a PNG; False (nothing written) when no layer learns ``param``."""
    fig = contour_figure(arrays, meta, param, title)
    if fig is None:
        return False
    _save_png(fig, path)
    return True


def contour_figure(arrays: dict[str, np.ndarray], meta: dict, param: str, title: str) -> Figure | None:
    """One panel per norm layer: ``param`` over steps × features sorted by final value; one colour scale."""
    layers = [layer for layer in meta.get("layers", []) if f"{layer['name']}/{param}" in arrays]
    if not any(layer.get("learnable", {}).get(param, True) for layer in layers):
        return None
    data = [contour_matrix(arrays["steps"], arrays[f"{layer['name']}/{param}"]) for layer in layers]
    vmin, vmax = colour_limits(param, [m for _, _, m in data])
    norm = Normalize(vmin=vmin, vmax=vmax)
    levels = np.linspace(vmin, vmax, _LEVELS)

    ncols = len(layers) if len(layers) <= 5 else 4
    nrows = math.ceil(len(layers) / ncols)
    fig = Figure(figsize=(3.3 * ncols + 1.2, 2.7 * nrows + 0.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = []
    for i, (layer, (steps, _, matrix)) in enumerate(zip(layers, data)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        axes.append(ax)
        frozen = not layer.get("learnable", {}).get(param, True)
        _draw_matrix(ax, steps, matrix, norm, levels)
        ax.set_title(_plain_text(f"{layer['name']} ({matrix.shape[1]}){' frozen' if frozen else ''}"), fontsize="small")
        ax.tick_params(labelsize="x-small")
        if i % ncols == 0:
            ax.set_ylabel("step")
        if i >= len(layers) - ncols:
            ax.set_xlabel("feature (sorted by final value)", fontsize="small")
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=axes, shrink=0.9)
    bar.set_label(f"{SYMBOL[param]} (centred at {NEUTRAL[param]:g})")
    fig.suptitle(_plain_text(title), fontsize="medium")
    return fig


def _draw_matrix(ax, steps: np.ndarray, matrix: np.ndarray, norm: Normalize, levels: np.ndarray) -> None:
    if not matrix.size:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        return
    rows = np.arange(len(matrix))
    if len(rows) > MAX_ROWS:
        rows = np.unique(np.linspace(0, len(rows) - 1, MAX_ROWS).round().astype(int))
    steps, matrix = np.asarray(steps, dtype=float)[rows], matrix[rows]
    features = np.arange(matrix.shape[1])
    if matrix.shape[0] >= 2 and matrix.shape[1] >= 2:
        ax.contourf(features, steps, np.clip(matrix, norm.vmin, norm.vmax), levels=levels, cmap=CMAP, norm=norm)
    else:  # a contour needs a 2×2 grid at least
        ax.pcolormesh(features, steps, matrix, cmap=CMAP, norm=norm, shading="nearest")


def plot_sparsity(
    series: dict[str, list[tuple[str, np.ndarray, np.ndarray, list[str]]]], colours: dict[str, str],
    widths: dict[str, float], panels: dict[str, list[str]] | None, path: Path,
) -> bool:
    """A panel per ReLU layer (columns) and group (rows): zeroed fraction over steps, one line per variant.

    ``series``: label → [(status, steps [T], sparsity [T, L], layer names)] per run. Finished runs
    are averaged; a variant with none shows its diverged runs dashed, with × where they stopped.
    """
    layer_names = list(dict.fromkeys(n for runs in series.values() for _, _, _, names in runs for n in names))
    if not layer_names:
        return False
    rows = panel_order(panels, list(series))
    fig = Figure(figsize=(2.9 * len(layer_names) + 2.4, 2.5 * len(rows) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    legend: dict[str, tuple[Line2D, str]] = {}
    diverged = False
    for r, (group, members) in enumerate(rows):
        for c, layer in enumerate(layer_names):
            ax = fig.add_subplot(len(rows), len(layer_names), r * len(layer_names) + c + 1)
            for label in members:
                line, stopped = _sparsity_line(ax, series[label], layer, colours[label], widths.get(label, LINE_WIDTH))
                diverged |= stopped
                if line is not None:
                    shown = legend_name(label, panels)
                    legend.setdefault(shown, (line, _plain_text(_shorten(shown))))
            ax.set_ylim(-0.02, 1.02)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize="x-small")
            if r == 0:
                ax.set_title(_plain_text(layer), fontsize="small")
            if c == 0:
                ax.set_ylabel(_plain_text(f"{group}\nzeroed fraction" if group else "zeroed fraction"), fontsize="small")
            if r == len(rows) - 1:
                ax.set_xlabel("step", fontsize="small")
    entries = list(legend.values())
    if diverged:
        entries.append((Line2D([], [], color="0.35", marker="x", **DIVERGED_STYLE), "diverged run (× where it stopped)"))
    fig.legend([h for h, _ in entries], [t for _, t in entries], loc="upper left", bbox_to_anchor=(1.0, 0.95),
               fontsize="small", frameon=False)
    fig.suptitle("Fraction of activations each ReLU zeroes (training batches)", fontsize="medium")
    fig.tight_layout()
    _save_png(fig, path)
    return True


def _sparsity_line(ax, runs, layer: str, colour: str, width: float) -> tuple[Line2D | None, bool]:
    """Mean over finished runs, else each diverged run dashed with ×: (a line for the legend, any ×)."""
    done = [_column(s, v, names, layer) for status, s, v, names in runs if status == "done"]
    done = [d for d in done if d is not None]
    if done:
        frame = pd.concat([pd.Series(v, index=s) for s, v in done], axis=1)
        mean = frame.mean(axis=1)
        (line,) = ax.plot(mean.index.to_numpy(), mean.to_numpy(), color=colour, linewidth=width)
        return line, False
    line, stopped = None, False
    for status, s, v, names in runs:
        col = _column(s, v, names, layer)
        if col is None:
            continue
        steps, values = col
        finite = np.isfinite(values)
        (line,) = ax.plot(steps[finite], values[finite], color=colour, **DIVERGED_STYLE)
        if finite.any():
            ax.plot([steps[finite][-1]], [values[finite][-1]], color=colour, marker="x", markersize=7,
                    markeredgewidth=2, linestyle="none")
            stopped = True
    return line, stopped


def _column(steps, values, names, layer):
    if layer not in names:
        return None
    return np.asarray(steps), np.asarray(values, dtype=float)[:, names.index(layer)]


# ---- the section -------------------------------------------------------------------------------

def write_bn_section(
    store: Any, out: Path, runs: pd.DataFrame, colours: dict[str, str],
    widths: dict[str, float] | None = None, panels: dict[str, list[str]] | None = None, tol: float = 0.05,
) -> Section:
    """Contours, sparsity figure and trajectory table for the runs that recorded the probes.

    γ/β artifacts are read one run at a time (a 350-epoch run records ~10⁴ steps), reduced to
    their statistics, and drawn only for the first seed of each variant.
    """
    norm_runs = [r for r in runs["run"] if _artifact(store, r, NORM_PARAMS_FILE).is_file()]
    relu_runs = [r for r in runs["run"] if _artifact(store, r, RELU_SPARSITY_FILE).is_file()]
    if not norm_runs and not relu_runs:
        return Section()
    figures_dir, tables_dir = out / "figures", out / "tables"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for old in figures_dir.glob("bn_*.png"):
        old.unlink()
    section = Section(css="table.traj td.param { text-align: center; }\n")
    parts = ["<h2>Normalization layers</h2>"]
    contours, stats = _norm_params(store, runs, norm_runs, figures_dir, section, tol)
    if norm_runs:
        parts.append(contours)
    if relu_runs:
        parts.append(_sparsity_html(store, runs, relu_runs, colours, widths or {}, panels, figures_dir, section))
    if norm_runs:
        parts.append(_trajectory_html(stats, colours, tol, tables_dir, section))
    section.html = "\n".join(parts)
    return section


def _norm_params(store, runs: pd.DataFrame, norm_runs: list[str], directory: Path, section: Section, tol: float):
    """Contour figures of each variant's first seed, and every run's trajectory statistics."""
    mine = runs[runs["run"].isin(norm_runs)].sort_values("replicate", kind="stable")
    first = dict(zip(mine.drop_duplicates("label")["run"], mine.drop_duplicates("label")["label"]))
    index = {label: i for i, label in enumerate(dict.fromkeys(runs["label"]))}
    parts = [
        "<h3>γ and β over training</h3>",
        "<p class=\"note\">One figure per variant and parameter, a panel per norm layer: x the features "
        "sorted by their final value, y the training step, colour the value (blue below, red above the "
        "neutral value: γ = 1, β = 0) on one symmetric scale shared by all layers of the figure, so "
        "figures of different variants have different scales. Drawn from the first seed of each "
        "variant; a parameter that no layer learns is not drawn.</p>",
    ]
    figures: dict[str, list[str]] = {}
    frames = []
    for row in runs[runs["run"].isin(norm_runs)].itertuples():
        loaded = _load(store, row.run, NORM_PARAMS_FILE)
        if loaded is None:
            continue
        frames.append(trajectory_stats(*loaded, tol=tol).assign(
            run=row.run, label=row.label, replicate=row.replicate, status=row.status))
        if first.get(row.run) != row.label:
            continue
        for param in PARAMS:
            name = f"bn_contour_{index[row.label]:02d}_{param}.png"
            title = f"{SYMBOL[param]}: {_shorten(row.label, 80)} (replicate {int(row.replicate)}, {row.status})"
            if plot_contours(*loaded, param, title, directory / name):
                section.figures.append(directory / name)
                figures.setdefault(row.label, []).append(
                    f"<figure><img src=\"figures/{_e(name)}\" alt=\"{_e(SYMBOL[param])} contours of "
                    f"{_e(row.label)}\"><figcaption>{_e(SYMBOL[param])} of {_e(row.label)}, replicate "
                    f"{_e(int(row.replicate))} (run <code>{_e(row.run)}</code>)</figcaption></figure>")
    for label in index:  # figures in variant order, whatever order the runs came in
        parts += figures.get(label, [])
    if not figures:
        parts.append("<p class=\"note\">No variant learns γ or β.</p>")
    stats = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run", "label", "replicate", "status", "layer", "param", "features", "learnable", "steps", *STATS])
    head = ["run", "label", "replicate", "status"]
    return "\n".join(parts), stats[head + [c for c in stats.columns if c not in head]]


def _sparsity_html(store, runs, relu_runs, colours, widths, panels, directory: Path, section: Section) -> str:
    series: dict[str, list] = {}
    for row in runs[runs["run"].isin(relu_runs)].itertuples():
        loaded = _load(store, row.run, RELU_SPARSITY_FILE)
        if loaded is not None:
            arrays, meta = loaded
            series.setdefault(row.label, []).append(
                (row.status, arrays["steps"], arrays["sparsity"], list(meta.get("layers", []))))
    path = directory / "bn_sparsity.png"
    if not plot_sparsity(series, colours, widths, panels, path):
        return ""
    section.figures.append(path)
    return (
        "<h3>ReLU sparsity</h3>\n<p class=\"note\">Fraction of the activations each ReLU sets to zero "
        "on the training batch, every k steps (probe relu_sparsity): mean over the finished seeds of "
        "each variant; a variant without a finished seed shows its diverged runs dashed, × where "
        "they stopped.</p>\n"
        "<figure><img src=\"figures/bn_sparsity.png\" alt=\"ReLU sparsity per layer\"></figure>"
    )


def _trajectory_html(per_run: pd.DataFrame, colours, tol: float, directory: Path, section: Section) -> str:
    done = per_run[per_run["status"] == "done"]
    summary = aggregate_over_seeds(done, by="label")
    runs_csv, summary_csv = directory / "trajectories_runs.csv", directory / "trajectories.csv"
    write_atomic(runs_csv, to_csv(per_run.assign(tol=tol)).encode())
    write_atomic(summary_csv, to_csv(summary.assign(tol=tol)).encode())
    section.tables += [runs_csv, summary_csv]

    shown = summary[summary["learnable"].astype(bool)]
    head = "".join(f"<th>{_e(h)}</th>" for h in ["variant", "layer", "param", "features", "n",
                                                  *(_STAT_TITLES[s] for s in STATS)])
    body = []
    for _, row in shown.iterrows():
        n = int(row["n"])
        cells = [f"<td>{_swatch(colours, row['label'])}{_e(row['label'])}</td>", f"<td>{_e(row['layer'])}</td>",
                 f"<td class=\"param\">{_e(SYMBOL.get(row['param'], row['param']))}</td>",
                 f"<td class=\"num\">{_e(int(row['features']))}</td>", f"<td class=\"num\">{n}</td>"]
        cells += [f"<td class=\"num\">{_e(format_mean_sd(row[f'{s}.mean'], row[f'{s}.sd'], n, n))}</td>" for s in STATS]
        body.append("<tr>" + "".join(cells) + "</tr>")
    frozen = summary[~summary["learnable"].astype(bool)]
    skipped = sorted(set(per_run["label"]) - set(done["label"])) if len(per_run) else []
    notes = []
    if len(frozen):
        notes.append(f"{len(frozen)} frozen (variant, layer, parameter) rows are left out: a frozen γ or β is "
                     "exactly 1 or 0 throughout (activity 0, no crossings); the CSV keeps them.")
    if skipped:
        notes.append("Variants without a finished seed: " + ", ".join(_e(s) for s in skipped) + ".")
    table = (f"<table class=\"traj\"><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>") if body else (
        "<p class=\"note\">No learned γ or β in a finished run.</p>")
    return (
        "<h3>Trajectory statistics</h3>\n"
        "<p class=\"note\">Per variant, norm layer and learned parameter, mean ± SD over the finished seeds "
        "(n): the final mean and median over features; activity, the mean |γ − 1| or |β| at the end; "
        "crossings, how often a feature's trajectory changes sides of the neutral value (1 for γ, 0 for β; "
        "touching it is no crossing), averaged over features; within ±tol, the fraction of features that "
        f"stay within {_e(f'{tol:g}')} of the neutral value for the whole run.</p>\n"
        + table + "\n"
        + "".join(f"<p class=\"note\">{n}</p>\n" for n in notes)
        + "<p class=\"note\">Also as <a href=\"tables/trajectories.csv\">CSV</a> (per variant) and "
        "<a href=\"tables/trajectories_runs.csv\">CSV per run</a>.</p>"
    )


def _swatch(colours: dict[str, str], label: str) -> str:
    colour = colours.get(label)
    return f"<span class=\"swatch\" style=\"background:{_e(colour)}\"></span>" if colour else ""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
