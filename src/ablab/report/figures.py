"""Learning-curve figures: mean over seeds with a 95 % CI band per variant, diverged runs drawn alone.

Scales and limits follow ``ablab.report.plot_scale``: a log y-axis where the means span decades,
limits that hold every drawn value with a margin, bands of the t-based 95 % confidence interval
of the mean, light and clipped to the axis, drawn only where they stay readable: for a variant
with n ≥ ``MIN_BAND_N`` seeds (at n = 2 the interval is ±12.7 SE and fills the panel) and in a
panel of at most ``MAX_BAND_VARIANTS`` variants (17 overlapping bands turn brown). Where the last
epochs' means lie close together on an axis that starts far below them (accuracy from chance),
a second row zooms into the last ``ZOOM_FRACTION`` of the x-range (``zoom_start``). Colours come
from ``PALETTE``: tab10 without its grey, then colours chosen far apart in CIELAB (every pair of
the first 20 at least ΔE*ab 27), so 17 arms stay distinguishable.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas (``new_figure``), never through
pyplot, so writing a report changes no global matplotlib state (backend, current figure). Matplotlib is
imported only when a figure is drawn: ``import ablab`` registers the report sections without it.

With ``report.baselines`` the baseline variants are drawn in fixed colours with thicker lines
(lower: black, upper: grey, as the thesis draws vanilla and BN_γβ). When a baseline names a family
of variants (``vanilla`` for ``vanilla, lr_scale=0.1`` …, see ``ablab.report.tables``), every
group (the rest of the label, e.g. ``lr_scale=10``) gets its own panel and a family keeps one
colour across panels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ablab.analysis.seeds import curves, run_curves, x_axis
from ablab.files import write_atomic
from ablab.report.plot_scale import ci_band, data_limits, use_log_scale
from ablab.report.tables import names_a_family, split_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DIVERGED_STYLE = dict(linewidth=0.8, alpha=0.8, linestyle="--")
LINE_WIDTH = 1.8
BASELINE_LINE_WIDTH = 3.0
BASELINE_COLOURS = {"lower": "#000000", "upper": "#8c8c8c"}  # black and grey; the palettes skip greys
BAND_ALPHA = 0.10
MIN_BAND_N = 3  # fewer seeds: no band (t_{0.975, 1} = 12.7)
MAX_BAND_VARIANTS = 6  # more variants in a panel: no bands, the lines alone
ZOOM_FRACTION = 0.3  # the zoomed row shows this last part of the x-range
ZOOM_RATIO = 0.1  # ... when the means there span less than this part of the full axis
# tab10 without its grey, then colours picked greedily far from those, from black, grey and white in CIELAB
# (L* 35–78, chroma 25–65): the minimum pairwise ΔE*ab of the 20 is 27.7 (tab20's first 17: 16.6)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#556622", "#ddaa66", "#88cc99", "#aa0055", "#ff8888", "#006655", "#994400", "#bbbbee", "#0055bb",
           "#886600", "#774466")
_CLIP_SPANS = 1.0  # a diverged curve is clipped this many y-spans of the mean curves beyond them
_CLIP_LOG_SPANS = 0.25  # on a log axis, of the span in decades: 1 would add as many empty decades


class Panels(dict):
    """Label → the panel titles it is drawn in, and each label's name in the legend (``names``)."""

    def __init__(self, titles: dict[str, list[str]], names: dict[str, str]):
        super().__init__(titles)
        self.names = names


def variant_colours(labels: list[str], baselines: dict[str, str] | None = None) -> dict[str, str]:
    """One colour per variant, in order of first appearance, so every figure and table agrees.

    With ``baselines``, baseline variants get ``BASELINE_COLOURS`` and, where a baseline names a
    family, every member of a family shares its family's colour.
    """
    labels = list(dict.fromkeys(labels))
    if not baselines:
        return dict(zip(labels, _palette(len(labels))))
    return keyed_colours(labels, _family_key(labels, baselines), baseline_roles(labels, baselines))


def keyed_colours(labels: list[str], key: dict[str, str], roles: dict[str, str]) -> dict[str, str]:
    """Labels with one ``key`` share a colour; the key of a baseline variant (``roles``: label → role)
    gets its role's ``BASELINE_COLOURS``, the others the palette without greys."""
    labels = list(dict.fromkeys(labels))
    fixed = {key[label]: BASELINE_COLOURS[role] for label, role in roles.items() if role in BASELINE_COLOURS}
    others = [k for k in dict.fromkeys(key[label] for label in labels) if k not in fixed]
    colours = {**dict(zip(others, _palette(len(others), skip_greys=True))), **fixed}
    return {label: colours[key[label]] for label in labels}


def baseline_roles(labels: list[str], baselines: dict[str, str] | None) -> dict[str, str]:
    """Label → role for every variant that is a baseline (named, or a member of a named family)."""
    if not baselines:
        return {}
    key = _family_key(list(dict.fromkeys(labels)), baselines)
    by_name = {name: role for role, name in baselines.items()}
    return {label: by_name[k] for label, k in key.items() if k in by_name}


def line_widths(labels: list[str], baselines: dict[str, str] | None) -> dict[str, float]:
    """Thicker lines for the baselines, so they read as references behind the other variants."""
    roles = baseline_roles(labels, baselines)
    return {label: BASELINE_LINE_WIDTH if label in roles else LINE_WIDTH for label in dict.fromkeys(labels)}


def curve_panels(labels: list[str], baselines: dict[str, str] | None) -> dict[str, list[str]] | None:
    """Label → the panels (groups) it is drawn in; None for one panel.

    Panels exist when a baseline names a family that spans two or more groups. A baseline variant
    without a group (``vanilla`` in a placement study) is drawn in every panel; any other variant
    without one gets a panel of its own ("other").
    """
    labels = list(dict.fromkeys(labels))
    if not baselines or not any(names_a_family(name, labels) for name in baselines.values()):
        return None
    groups = list(dict.fromkeys(split_label(label)[1] for label in labels if split_label(label)[1]))
    if len(groups) < 2:
        return None
    shared = set(baselines.values())
    return {
        label: ([split_label(label)[1]] if split_label(label)[1] else (groups if label in shared else ["other"]))
        for label in labels
    }


def panel_order(panels: dict[str, list[str]] | None, labels: list[str]) -> list[tuple[str, list[str]]]:
    """(panel title, its labels) in order of first appearance; one untitled panel without ``panels``."""
    labels = list(dict.fromkeys(labels))
    if not panels:
        return [("", labels)]
    titles = list(dict.fromkeys(t for label in labels for t in panels.get(label, ["other"])))
    return [(t, [label for label in labels if t in panels.get(label, ["other"])]) for t in titles]


def legend_name(label: str, panels: dict[str, list[str]] | None) -> str:
    """A variant's name in a legend: its family when each panel is one group, else the whole label."""
    if not panels:
        return label
    names = getattr(panels, "names", None)
    return names.get(label, label) if names is not None else split_label(label)[0]


def plot_curve(
    metrics: pd.DataFrame, runs: pd.DataFrame, ref: str, colours: dict[str, str], path: Path,
    widths: dict[str, float] | None = None, panels: dict[str, list[str]] | None = None,
    notes: list[str] | None = None,
) -> bool:
    """Draw one metric (``"split.name"``) for every variant into a PNG; False when there is nothing to draw.

    ``notes`` receives what the figure leaves out or adds (bands, a zoomed row), for its caption."""
    fig = curve_figure(metrics, runs, ref, colours, widths, panels)
    if fig is None:
        return False
    if notes is not None:
        notes += getattr(fig, "ablab_notes", [])
    save_png(fig, path)
    return True


def curve_figure(
    metrics: pd.DataFrame, runs: pd.DataFrame, ref: str, colours: dict[str, str],
    widths: dict[str, float] | None = None, panels: dict[str, list[str]] | None = None,
) -> Figure | None:
    """One metric's learning curves: mean per variant, its 95 % CI band, diverged runs alone; None if empty.

    ``widths``: line width per label (baselines thicker); ``panels``: label → panel titles
    (``curve_panels``), one subplot per panel side by side. The y-axis is logarithmic where the
    means span decades and zoomed to what is drawn (``ablab.report.plot_scale``); a second row of
    subplots zooms into the last epochs where the means there would otherwise look the same
    (``zoom_start``). ``fig.ablab_notes`` says what was left out or added, for the caption.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    split, _, name = ref.partition(".")
    x = x_axis(split)
    mean = curves(metrics, runs, split, name)
    diverged = run_curves(metrics, runs, split, name, statuses=("diverged",))
    if mean.empty and diverged.empty:
        return None
    log = use_log_scale(mean["mean"] if len(mean) else diverged["value"])

    layout = panel_order(panels, list(runs["label"])) if panels else [("", list(dict.fromkeys(runs["label"])))]
    zooms = [zoom_start(mean[mean["label"].isin(members)], x, log) for _, members in layout]
    rows = 2 if any(z is not None for z in zooms) else 1
    fig = new_figure(figsize=(7.5 if len(layout) == 1 else min(3.6 * len(layout) + 2.2, 18.0), 4.2 * rows), dpi=110)
    legend: dict[str, tuple[Any, str]] = {}
    notes: list[str] = []
    axes = []
    for i, (title, members) in enumerate(layout):
        ax = fig.add_subplot(rows, len(layout), i + 1)
        axes.append(ax)
        if log:
            ax.set_yscale("log")
        part, part_div = mean[mean["label"].isin(members)], diverged[diverged["label"].isin(members)]
        drawn = list(part["mean"])
        for label, group in part.groupby("label", sort=False):
            line = _mean_line(ax, group, x, colours[label], (widths or {}).get(label, LINE_WIDTH))
            shown = legend_name(label, panels)
            n = int(group["n"].max())
            legend.setdefault(shown, (line, f"{plain_text(shorten(shown))}" + ("" if panels else f" (n={n})")))
        if not part_div.empty:
            drawn += _plot_diverged(ax, part_div, x, colours, _clip_bounds(part["mean"], part_div["value"], log), log)
            legend.setdefault("\0diverged", (Line2D([], [], color="0.35", marker="x", **DIVERGED_STYLE),
                                              "diverged run (× where it stopped)"))
        ax.set_ylim(*data_limits(drawn, log))
        if _draw_bands(ax, part, x, colours, notes):
            legend.setdefault("\0band", (Patch(color="0.5", alpha=BAND_ALPHA), "95 % CI of the mean (t)"))
        ax.set_title(plain_text(f"{ref}: {title}" if title else ref), fontsize="medium")
        ax.set_xlabel(x)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if zooms[i] is not None:
            _zoom_panel(fig.add_subplot(rows, len(layout), len(layout) + i + 1), part, x, zooms[i], log, colours,
                        widths, f"{ref}: {title}" if title else ref, notes)
    if rows == 2:
        notes.append(f"the lower row zooms into the last {round(ZOOM_FRACTION * 100)} % of the {x}s (at least two), "
                     "where the means lie too close together to tell apart on the full axis")
    axes[0].set_ylabel(plain_text(ref + (" (log scale)" if log else "")))
    special = [legend.pop(k) for k in ("\0band", "\0diverged") if k in legend]
    entries = list(legend.values()) + special
    handles, texts = [h for h, _ in entries], [t for _, t in entries]
    # explicit handles and labels: a label starting with "_" would otherwise be hidden
    axes[-1].legend(handles, texts, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                    frameon=False, ncol=1 if len(texts) <= 14 else 2)
    if panels:
        fig.tight_layout()
    elif rows == 2:
        fig.subplots_adjust(hspace=0.35)
    fig.ablab_notes = list(dict.fromkeys(notes))
    return fig


def _mean_line(ax, group: pd.DataFrame, x: str, colour: str, width: float):
    (line,) = ax.plot(group[x].to_numpy(), group["mean"].to_numpy(), color=colour, linewidth=width,
                      zorder=2.5 if width > LINE_WIDTH else 2)
    return line


def zoom_start(part: pd.DataFrame, x: str, log: bool) -> float | None:
    """Where a zoomed view of the last epochs starts, or None when the full axis already tells the means apart.

    Zoom when ≥ 2 variants and ≥ 4 x-values are drawn and the means over the last ``ZOOM_FRACTION`` of the
    x-values (at least 2 of them) span less than ``ZOOM_RATIO`` of the full axis (in log10 on a log axis)."""
    if part.empty or part["label"].nunique() < 2 or part[x].nunique() < 4:
        return None
    xs = np.sort(part[x].unique().astype(float))
    start = float(xs[-max(2, int(np.ceil(ZOOM_FRACTION * len(xs))))])
    lo, hi = data_limits(part["mean"], log)
    last = part.loc[part[x] >= start, "mean"].to_numpy(dtype=float)
    last = last[np.isfinite(last) & ((last > 0) if log else True)]
    if len(last) < 2:
        return None
    if log:
        spread, span = np.log10(last.max()) - np.log10(last.min()), np.log10(hi) - np.log10(lo)
    else:
        spread, span = last.max() - last.min(), hi - lo
    return start if spread < ZOOM_RATIO * span else None


def _zoom_panel(ax, part: pd.DataFrame, x: str, start: float, log: bool, colours: dict[str, str],
                widths: dict[str, float] | None, title: str, notes: list[str]) -> None:
    """The means (and bands) from ``start`` on, the y-axis zoomed to those means."""
    from matplotlib.ticker import MaxNLocator

    if log:
        ax.set_yscale("log")
    last = part[part[x] >= start]
    for label, group in last.groupby("label", sort=False):
        _mean_line(ax, group, x, colours[label], (widths or {}).get(label, LINE_WIDTH))
    ax.set_ylim(*data_limits(last["mean"], log))
    _draw_bands(ax, last, x, colours, notes)
    ax.set_title(plain_text(f"{title} (last {x}s, zoomed)"), fontsize="medium")
    ax.set_xlabel(x)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _draw_bands(ax, part: pd.DataFrame, x: str, colours: dict[str, str], notes: list[str] | None = None) -> bool:
    """Each variant's 95 % CI band, clipped to the axis (a band is no value; the means set the limits).

    None in a panel of more than ``MAX_BAND_VARIANTS`` variants, none for a variant with fewer than
    ``MIN_BAND_N`` seeds; ``notes`` gets a line for each rule that left a band out."""
    notes = [] if notes is None else notes
    lo, hi = ax.get_ylim()
    if part["label"].nunique() > MAX_BAND_VARIANTS:
        notes.append(f"no bands in a panel of more than {MAX_BAND_VARIANTS} variants (they would cover each other)")
        return False
    any_band = False
    for label, group in part.groupby("label", sort=False):
        lower, upper = ci_band(group["mean"], group["sd"], group["n"])
        has = np.isfinite(lower) & np.isfinite(upper) & (group["n"].to_numpy() >= MIN_BAND_N)
        if (group["n"].to_numpy() == 2).any():
            notes.append(f"no band for fewer than {MIN_BAND_N} seeds (at n = 2 the 95 % t interval is ±12.7 "
                         "standard errors and fills the panel)")
        if has.any():
            ax.fill_between(group[x].to_numpy(dtype=float), np.clip(np.where(has, lower, lo), lo, hi),
                            np.clip(np.where(has, upper, lo), lo, hi), where=has, color=colours[label],
                            alpha=BAND_ALPHA, linewidth=0, zorder=1)
            any_band = True
    ax.set_ylim(lo, hi)  # fill_between must not widen the axis
    return any_band


def _palette(n: int, skip_greys: bool = False) -> list[str]:
    """``n`` distinct colours: ``PALETTE`` (no greys: those are the baselines'), then spread over turbo."""
    import matplotlib
    from matplotlib.colors import to_hex

    if n <= len(PALETTE):
        return list(PALETTE[:n])
    # the hand-picked colours run out; spread over a perceptual map
    return [to_hex(matplotlib.colormaps["turbo"](p)) for p in np.linspace(0.05, 0.95, n)]


def _family_key(labels: list[str], baselines: dict[str, str]) -> dict[str, str]:
    """Label → the name colours are keyed by: its family when a baseline names families, else itself."""
    by_family = any(names_a_family(name, labels) for name in baselines.values())
    return {label: split_label(label)[0] if by_family else label for label in labels}


def _clip_bounds(means: pd.Series, values: pd.Series, log: bool) -> tuple[float, float]:
    """Where diverged curves are clipped: ``_CLIP_SPANS`` spans of the means beyond them (``_CLIP_LOG_SPANS``
    of the span in log10 on a log axis)."""
    means = means.to_numpy(dtype=float)
    means = means[np.isfinite(means) & ((means > 0) if log else True)]
    lo, hi = (float(means.min()), float(means.max())) if len(means) else _finite_range(values, positive=log)
    if log:
        lo, hi = np.log10(lo), np.log10(hi)
    span = (hi - lo) or 1.0
    spans = _CLIP_LOG_SPANS if log else _CLIP_SPANS
    lo, hi = lo - spans * span, hi + spans * span
    return (float(10.0 ** lo), float(10.0 ** hi)) if log else (lo, hi)


def _plot_diverged(ax, diverged: pd.DataFrame, x: str, colours: dict[str, str], bounds: tuple[float, float],
                   log: bool) -> list[float]:
    """Thin curves that stop where each run diverged, an × at that point; values clipped to ``bounds``.

    Returns every y drawn, so the axis limits can hold them.
    """
    lo, hi = bounds
    drawn: list[float] = []
    for _, run in diverged.groupby("run", sort=False):
        colour = colours[run["label"].iloc[0]]
        xs, ys = run[x].to_numpy(dtype=float), run["value"].to_numpy(dtype=float)
        finite = np.isfinite(ys) & ((ys > 0) if log else True)  # a log axis cannot show 0 or less
        stop = _stop_height(np.where(finite | np.isinf(ys), ys, np.nan), lo, hi)
        line_x, line_y = xs[finite], np.clip(ys[finite], lo, hi)
        if not finite[-1]:  # run the line on up to the × so the jump is visible
            line_x, line_y = np.append(line_x, xs[-1]), np.append(line_y, stop)
        ax.plot(line_x, line_y, color=colour, **DIVERGED_STYLE)
        ax.plot([xs[-1]], [stop], color=colour, marker="x", markersize=8, markeredgewidth=2, linestyle="none")
        drawn += [*line_y, stop]
    return drawn


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


def _finite_range(values: pd.Series, positive: bool = False) -> tuple[float, float]:
    finite = values.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite) & ((finite > 0) if positive else True)]
    if not len(finite):
        return (0.1, 10.0) if positive else (0.0, 1.0)
    return float(finite.min()), float(np.quantile(finite, 0.9))  # the top decile is where runs blow up


def shorten(text: str, limit: int = 60) -> str:
    """Legend entries stay readable; the HTML tables carry the full label."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain_text(text: str) -> str:
    """Text matplotlib shows literally: ``$`` would start mathtext."""
    return str(text).replace("$", r"\$")


def new_figure(**kwargs: Any) -> Figure:
    """A ``matplotlib.figure.Figure(**kwargs)`` with an Agg canvas attached (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Render in memory, then write atomically: a reader never sees half a PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    write_atomic(path, buf.getvalue())
