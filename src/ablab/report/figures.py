"""Learning-curve figures: mean over seeds with a ±SD band per variant, diverged runs drawn alone.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot,
so writing a report changes no global matplotlib state (backend, current figure).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ablab.analysis.seeds import curves, run_curves, x_axis

DIVERGED_STYLE = dict(linewidth=0.8, alpha=0.8, linestyle="--")
_CLIP_SPANS = 1.0  # a diverged curve is clipped this many y-spans of the mean curves beyond them


def variant_colours(labels: list[str]) -> dict[str, str]:
    """One colour per variant, in order of first appearance, so every figure and table agrees."""
    labels = list(dict.fromkeys(labels))
    if len(labels) <= 10:
        cmap, points = matplotlib.colormaps["tab10"], range(len(labels))
    elif len(labels) <= 20:
        cmap, points = matplotlib.colormaps["tab20"], range(len(labels))
    else:  # qualitative maps run out; spread over a perceptual one
        cmap, points = matplotlib.colormaps["turbo"], np.linspace(0.05, 0.95, len(labels))
    return {label: to_hex(cmap(p)) for label, p in zip(labels, points)}


def plot_curve(
    metrics: pd.DataFrame, runs: pd.DataFrame, ref: str, colours: dict[str, str], path: Path
) -> bool:
    """Draw one metric (``"split.name"``) for every variant into a PNG; False when there is nothing to draw."""
    split, _, name = ref.partition(".")
    x = x_axis(split)
    mean = curves(metrics, runs, split, name)
    diverged = run_curves(metrics, runs, split, name, statuses=("diverged",))
    if mean.empty and diverged.empty:
        return False

    fig = Figure(figsize=(7.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles, texts = [], []
    for label, group in mean.groupby("label", sort=False):
        colour = colours[label]
        xs, ys, sd = group[x].to_numpy(), group["mean"].to_numpy(), group["sd"].fillna(0.0).to_numpy()
        ax.fill_between(xs, ys - sd, ys + sd, color=colour, alpha=0.18, linewidth=0)
        (line,) = ax.plot(xs, ys, color=colour, linewidth=1.8)
        handles.append(line)
        texts.append(f"{_plain_text(_shorten(label))} (n={int(group['n'].max())})")
    if not diverged.empty:
        _plot_diverged(ax, diverged, x, colours, have_mean=not mean.empty)
        handles.append(Line2D([], [], color="0.35", marker="x", **DIVERGED_STYLE))
        texts.append("diverged run (× where it stopped)")

    ax.set_title(_plain_text(ref))
    ax.set_xlabel(x)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_plain_text(ref))
    ax.grid(True, alpha=0.3)
    # explicit handles and labels: a label starting with "_" would otherwise be hidden
    ax.legend(handles, texts, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
              frameon=False, ncol=1 if len(texts) <= 14 else 2)
    _save_png(fig, path)
    return True


def _plot_diverged(ax, diverged: pd.DataFrame, x: str, colours: dict[str, str], have_mean: bool) -> None:
    """Thin curves that stop where each run diverged, an × at that point; huge values are clipped."""
    lo, hi = ax.get_ylim() if have_mean else _finite_range(diverged["value"])
    span = (hi - lo) or 1.0
    lo, hi = lo - _CLIP_SPANS * span, hi + _CLIP_SPANS * span
    for _, run in diverged.groupby("run", sort=False):
        colour = colours[run["label"].iloc[0]]
        xs, ys = run[x].to_numpy(dtype=float), run["value"].to_numpy(dtype=float)
        finite = np.isfinite(ys)
        stop = _stop_height(ys, lo, hi)
        line_x, line_y = xs[finite], np.clip(ys[finite], lo, hi)
        if not finite[-1]:  # run the line on up to the × so the jump is visible
            line_x, line_y = np.append(line_x, xs[-1]), np.append(line_y, stop)
        ax.plot(line_x, line_y, color=colour, **DIVERGED_STYLE)
        ax.plot([xs[-1]], [stop], color=colour, marker="x", markersize=8, markeredgewidth=2, linestyle="none")


def _stop_height(ys: np.ndarray, lo: float, hi: float) -> float:
    """Where to put the ×: the last value, pinned to the edge for ±inf, the last finite value for NaN."""
    last = ys[-1]
    if np.isposinf(last):
        return hi
    if np.isneginf(last):
        return lo
    finite = ys[np.isfinite(ys)]
    if np.isnan(last):
        return float(np.clip(finite[-1], lo, hi)) if len(finite) else (lo + hi) / 2
    return float(np.clip(last, lo, hi))


def _finite_range(values: pd.Series) -> tuple[float, float]:
    finite = values.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return 0.0, 1.0
    return float(finite.min()), float(np.quantile(finite, 0.9))  # the top decile is where runs blow up


def _shorten(text: str, limit: int = 60) -> str:
    """Legend entries stay readable; the HTML tables carry the full label."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain_text(text: str) -> str:
    """Text matplotlib shows literally: ``$`` would start mathtext."""
    return str(text).replace("$", r"\$")


def _save_png(fig: Figure, path: Path) -> None:
    """Render to a temporary file beside ``path``, then rename: a reader never sees half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)
