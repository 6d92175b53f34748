"""Figures of norm-layer training (Dissecting BatchNorm, seed 001): γ/β contours and ReLU sparsity.

- ``contour_figure``: one panel per norm layer, as in the thesis' Fig. 3.2 and 4.6-4.13: x the
  features sorted by their final value (§3.3.2), y the training step, colour the value on a
  diverging map centred at the neutral value (γ = 1, β = 0) with one symmetric scale shared by
  all layers of the figure; a parameter frozen in every layer (γ of ``affine: beta``) gets none;
- ``plot_sparsity``: the fraction of activations each ReLU zeroes over training, per layer and
  variant (§3.3.1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ablab.analysis.trajectories import NEUTRAL, finite_rows
from ablab.report.figures import (
    DIVERGED_STYLE, LINE_WIDTH, legend_name, new_figure, panel_order, plain_text, save_png, shorten,
)
from ablab.report.plot_scale import zoom_to_lines

if TYPE_CHECKING:
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

CMAP = "RdBu_r"  # diverging: blue below the neutral value, white at it, red above
SYMBOL = {"gamma": "γ", "beta": "β"}
MAX_ROWS = 400  # contour rows drawn per panel; longer trajectories are subsampled evenly (last row kept)
_LEVELS = 21
MAX_COLUMNS = 3  # panels per row: a wider figure shrinks below legible on a 1100-px page


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


# ---- figures -----------------------------------------------------------------------------------

def plot_contours(arrays: dict[str, np.ndarray], meta: dict, param: str, title: str, path: Path) -> bool:
    """Write ``contour_figure`` as a PNG; False (nothing written) when no layer learns ``param``."""
    fig = contour_figure(arrays, meta, param, title)
    if fig is None:
        return False
    save_png(fig, path)
    return True


def contour_figure(arrays: dict[str, np.ndarray], meta: dict, param: str, title: str) -> Figure | None:
    """One panel per norm layer: ``param`` over steps × features sorted by final value; one colour scale."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    layers = [layer for layer in meta.get("layers", []) if f"{layer['name']}/{param}" in arrays]
    if not any(layer.get("learnable", {}).get(param, True) for layer in layers):
        return None
    data = [contour_matrix(arrays["steps"], arrays[f"{layer['name']}/{param}"]) for layer in layers]
    vmin, vmax = colour_limits(param, [m for _, _, m in data])
    norm = Normalize(vmin=vmin, vmax=vmax)
    levels = np.linspace(vmin, vmax, _LEVELS)

    ncols = min(len(layers), MAX_COLUMNS)
    nrows = math.ceil(len(layers) / ncols)
    fig = new_figure(figsize=(3.3 * ncols + 1.2, 2.7 * nrows + 0.8), dpi=100, layout="constrained")
    axes = []
    for i, (layer, (steps, _, matrix)) in enumerate(zip(layers, data)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        axes.append(ax)
        frozen = not layer.get("learnable", {}).get(param, True)
        _draw_matrix(ax, steps, matrix, norm, levels)
        ax.set_title(plain_text(f"{layer['name']} ({matrix.shape[1]}){' frozen' if frozen else ''}"), fontsize="small")
        ax.tick_params(labelsize="x-small")
        if i % ncols == 0:
            ax.set_ylabel("step")
        if i >= len(layers) - ncols:
            ax.set_xlabel("feature (sorted by final value)", fontsize="small")
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=axes, shrink=0.9)
    bar.set_label(f"{SYMBOL[param]} (centred at {NEUTRAL[param]:g})")
    fig.suptitle(plain_text(title), fontsize="medium")
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
    """Write ``sparsity_figure`` as a PNG; False (nothing written) when the records name no ReLU layer."""
    fig = sparsity_figure(series, colours, widths, panels)
    if fig is None:
        return False
    save_png(fig, path)
    return True


def sparsity_figure(
    series: dict[str, list[tuple[str, np.ndarray, np.ndarray, list[str]]]], colours: dict[str, str],
    widths: dict[str, float], panels: dict[str, list[str]] | None,
) -> Figure | None:
    """A panel per ReLU layer (columns) and group (rows): zeroed fraction over steps, one line per variant.

    ``series``: label → [(status, steps [T], sparsity [T, L], layer names)] per run. Finished runs
    are averaged; a variant with none shows its diverged runs dashed, with × where they stopped.
    """
    from matplotlib.lines import Line2D

    layer_names = list(dict.fromkeys(n for runs in series.values() for _, _, _, names in runs for n in names))
    if not layer_names:
        return None
    rows = panel_order(panels, list(series))
    fig = new_figure(figsize=(2.9 * len(layer_names) + 2.4, 2.5 * len(rows) + 0.6), dpi=100)
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
                    legend.setdefault(shown, (line, plain_text(shorten(shown))))
            zoom_to_lines(ax)  # the differences, not 0-1: a value is never clipped (issue 12)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize="x-small")
            if r == 0:
                ax.set_title(plain_text(layer), fontsize="small")
            if c == 0:
                ax.set_ylabel(plain_text(f"{group}\nzeroed fraction" if group else "zeroed fraction"), fontsize="small")
            if r == len(rows) - 1:
                ax.set_xlabel("step", fontsize="small")
    entries = list(legend.values())
    if diverged:
        entries.append((Line2D([], [], color="0.35", marker="x", **DIVERGED_STYLE), "diverged run (× where it stopped)"))
    fig.legend([h for h, _ in entries], [t for _, t in entries], loc="upper left", bbox_to_anchor=(1.0, 0.95),
               fontsize="small", frameon=False)
    fig.suptitle("Fraction of activations each ReLU zeroes (training batches)", fontsize="medium")
    fig.tight_layout()
    return fig


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
