"""Per-epoch range and SD of the loss over bit-changed replicates, log scale (seed 002 Fig. B.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablab.analysis.loss_spread import bitflip_variants, loss_spread
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.figures import new_figure, plain_text, save_png, shorten
from ablab.report.html import e, figure_html
from ablab.report.plot_scale import data_limits
from ablab.files import write_atomic

TABLE, FIGURE = "loss_spread.csv", "loss_spread.png"
MIN_DECADES = 10.0
STATS = (("range", "range (max − min) over runs"), ("sd", "SD over runs (ddof 0)"))


@REPORT_SECTIONS.register("loss_spread")
class LossSpread(ReportSection):
    """Range and SD of the loss over a bit-changed variant's runs at each epoch, on a log axis (Fig. B.1)."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(len(ctx.runs)) and "info" in ctx.runs and bool(bitflip_variants(ctx.runs))

    def render(self, ctx: ReportContext) -> PagePart:
        labels = bitflip_variants(ctx.runs)
        table = loss_spread(ctx.metrics, ctx.runs, labels)
        csv_path = ctx.table_path(TABLE)
        write_atomic(csv_path, to_csv(table).encode())
        head = "<h2>Loss spread of bit-changed runs</h2>\n"
        note = ("Each variant whose runs each moved one first-layer weight by one ulp (<code>seeds.bitflip</code>): "
                "at each epoch, the range (max − min) and the SD (ddof 0) over its runs of the training loss (the "
                "mean of the epoch's recorded batch losses) and of each evaluated split's loss (seed 002 Fig. B.1, "
                "which draws the middle-95 % range of 100 runs). Log y-axis: an exact 0 (runs whose losses agree to "
                f"the last bit) cannot be drawn on it and is marked ▽ on the axis floor. "
                f"<a href=\"tables/{TABLE}\">CSV</a>.")
        if table.empty:
            return PagePart(head + f"<p class=\"note\">{note} No loss was recorded.</p>", tables=[csv_path])
        path = ctx.figure_path(FIGURE)
        plot_loss_spread(table, ctx.colours, path)
        zeros = _zero_summary(table)
        caption = e(zeros) if zeros else ""
        return PagePart(head + f"<p class=\"note\">{note}</p>\n"
                    + figure_html(FIGURE, "range and SD of the loss over runs per epoch", caption),
                    figures=[path], tables=[csv_path])


def _zero_summary(table: pd.DataFrame) -> str:
    """Which variants' series have an exactly-zero SD, and at how many of their epochs."""
    parts = []
    for (label, series), rows in table.groupby(["variant", "series"], sort=False):
        zero = int((rows["sd"] == 0).sum())
        if zero:
            parts.append(f"{label}, {series}: SD exactly 0 at {zero} of {len(rows)} epochs")
    return "; ".join(parts) + "." if parts else ""


def plot_loss_spread(table: pd.DataFrame, colours: dict[str, str], path: Path) -> None:
    """One row of panels per loss series (range, SD), one line per variant; zeros as ▽ on the axis floor."""
    series = list(dict.fromkeys(table["series"]))
    fig = new_figure(figsize=(10.0, 3.2 * len(series) + 0.6), dpi=110)
    for i, name in enumerate(series):
        rows = table[table["series"] == name]
        for j, (stat, title) in enumerate(STATS):
            ax = fig.add_subplot(len(series), len(STATS), i * len(STATS) + j + 1)
            _panel(ax, rows, stat, colours)
            ax.set_title(f"{name} loss: {title}", fontsize="medium")
            ax.set_xlabel("epoch")
    fig.tight_layout()
    save_png(fig, path)


def _panel(ax, rows: pd.DataFrame, stat: str, colours: dict[str, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    values = rows[stat].to_numpy(dtype=float)
    low, high = data_limits(values[values > 0], log=True)
    if high / low < MIN_DECADES:  # one value, or a few close ones: a decade around them, not a sliver
        middle = np.sqrt(low * high)
        low, high = middle / np.sqrt(MIN_DECADES), middle * np.sqrt(MIN_DECADES)
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for i, (label, mine) in enumerate(rows.groupby("variant", sort=False)):
        y = mine[stat].to_numpy(dtype=float)
        colour = colours.get(label)
        ax.plot(mine["epoch"], np.where(y > 0, y, np.nan), marker=".", color=colour,
                label=plain_text(shorten(label)))
        zero = y == 0
        if zero.any():  # an exact zero has no log value: marked on the floor, smaller per variant so all show
            ax.plot(mine["epoch"][zero], np.full(zero.sum(), low), linestyle="none", marker="v",
                    markersize=max(3.0, 10.0 - 2.5 * i), markerfacecolor="none", color=colour, clip_on=False)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize="small", frameon=False)
