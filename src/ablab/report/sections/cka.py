"""Linear CKA between the runs of each variant, per layer (seed 002 Fig. 5.1), from stored activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ablab.analysis.stored_variability import CKA_MODELS, cka_table
from ablab.artifacts import ACTIVATIONS_KIND
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.figures import new_figure, plain_text, save_png, shorten
from ablab.report.html import e
from ablab.files import write_atomic

SPLIT = "test"
TABLE, FIGURE = "cka.csv", "cka.png"


@REPORT_SECTIONS.register("cka")
class Cka(ReportSection):
    """Mean linear CKA over pairs of runs, per layer and variant, from the activations evaluator's files."""

    def applies(self, ctx: ReportContext) -> bool:
        if not len(ctx.runs):
            return False
        arts = ctx.artifacts
        return bool(((arts["kind"] == ACTIVATIONS_KIND) & (arts["split"] == SPLIT)).any())

    def render(self, ctx: ReportContext) -> PagePart:
        table = cka_table(ctx.store, ctx.runs, ctx.artifacts, SPLIT)
        csv_path = ctx.table_path(TABLE)
        write_atomic(csv_path, to_csv(table).encode())
        head = "<h2>Representation similarity (linear CKA)</h2>\n"
        note = (f"Linear CKA (Kornblith et al. 2019) between the {SPLIT}-split activations the runs stored "
                f"(evaluator <code>activations</code>), averaged over the pairs of each variant's first "
                f"{CKA_MODELS} usable runs ± a jackknife error over runs; biased form in the figure, both forms "
                f"in the <a href=\"tables/{TABLE}\">CSV</a> (seed 002 Fig. 5.1).")
        path = ctx.figure_path(FIGURE)
        if not plot_cka(table, ctx.colours, path):
            return PagePart(head + f"<p class=\"note\">{note} No variant has two runs with finite activations of a "
                        "common layer.</p>", tables=[csv_path])
        return PagePart(head + f"<p class=\"note\">{note}</p>\n<figure><img src=\"figures/{FIGURE}\" "
                    f"alt=\"{e('linear CKA per layer')}\"></figure>", figures=[path], tables=[csv_path])


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
DODGE = 0.28  # the x-width over which a layer's variants are spread


def plot_cka(table: pd.DataFrame, colours: dict[str, str], path: Path) -> bool:
    """Mean CKA ± error per layer (x, in stored order), one line per variant; False when nothing to draw."""
    fig = cka_figure(table, colours)
    if fig is None:
        return False
    save_png(fig, path)
    return True


def cka_figure(table: pd.DataFrame, colours: dict[str, str]):
    """The CKA figure, or None when nothing to draw. Variants whose values coincide (bitflip and kernels both
    at CKA ≈ 1) stay visible: each has its own marker, is shifted sideways within its layer (``DODGE``), and
    later ones are drawn smaller and on top, so a marker never hides another."""
    drawn = table[np.isfinite(table["cka"].astype(float))]
    if drawn.empty:
        return None
    layers = list(dict.fromkeys(drawn["layer"]))
    variants = list(dict.fromkeys(drawn["variant"]))
    k = len(variants)
    fig = new_figure(figsize=(max(5.0, 0.9 * len(layers) + 2.5), 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, rows) in enumerate(drawn.groupby("variant", sort=False)):
        shift = (i - (k - 1) / 2) * (DODGE / max(k - 1, 1)) if k > 1 else 0.0
        x = [layers.index(layer) + shift for layer in rows["layer"]]
        ax.errorbar(x, rows["cka"], yerr=rows["cka_err"].fillna(0.0), marker=MARKERS[i % len(MARKERS)],
                    markersize=max(3.5, 8.0 - 4.5 * i / max(k - 1, 1)), capsize=3, linewidth=1.2,
                    color=colours.get(label), label=plain_text(shorten(label)), zorder=3 + i)
    ax.set_xticks(range(len(layers)), [plain_text(shorten(name, 20)) for name in layers], rotation=30, ha="right")
    ax.set_ylabel("mean linear CKA over pairs of runs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    return fig
