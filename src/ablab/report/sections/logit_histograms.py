"""Histograms of the logits on clean and attacked test inputs, per variant (seed 002 Fig. 3.1 left, Fig. 3.2 right).

The ``logit_stats`` evaluator stores, per run, counts of every logit value of its subsample in fixed bins
(``logit_histogram_test_e<epoch>.npz``: edges, clean, attacked). Each variant's runs are summed at their
last stored epoch and drawn as a density: clean inputs on top, attacked ones below (the seed's layout in
Fig. 3.2). The logit variance and range themselves are metrics (``test.logit_variance`` …) in the final table.
"""

from __future__ import annotations

import numpy as np

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.figures import new_figure, plain_text, save_png
from ablab.report.html import figure_html

KIND, SPLIT, FIGURE = "logit_histogram", "test", "logit_histograms.png"
PANELS = (("clean", "clean inputs"), ("attacked", "attacked inputs"))


@REPORT_SECTIONS.register("logit_histograms")
class LogitHistograms(ReportSection):
    """Logit histograms per variant on clean and attacked test inputs (seed 002 Fig. 3.1 left, Fig. 3.2 right)."""

    def applies(self, ctx: ReportContext) -> bool:
        arts = ctx.artifacts
        return bool(len(arts)) and bool(((arts["kind"] == KIND) & (arts["split"] == SPLIT)).any())

    def render(self, ctx: ReportContext) -> PagePart:
        summed = variant_histograms(ctx)
        head = "<h2>Logit histograms</h2>\n"
        if not summed:
            return PagePart(head + "<p class=\"note\">Logit histograms were recorded, but none could be read.</p>")
        path = ctx.figure_path(FIGURE)
        plot_histograms(summed, ctx.colours, path)
        return PagePart(head + "<p class=\"note\">Density of every logit value of the logit_stats subsample at each "
                        "run's last stored epoch, summed over a variant's runs; top: clean test inputs, bottom: "
                        "under the evaluator's attack. As seed 002 Fig. 3.1 (left) and Fig. 3.2 (right).</p>\n"
                        + figure_html(FIGURE, "logit histograms, clean and attacked"), figures=[path])


def variant_histograms(ctx: ReportContext) -> dict[str, dict[str, np.ndarray]]:
    """Per variant label: ``edges`` and the summed ``clean``/``attacked`` counts of its runs' last histograms."""
    arts = ctx.artifacts
    arts = arts[(arts["kind"] == KIND) & (arts["split"] == SPLIT)]
    labels = dict(zip(ctx.runs["run"], ctx.runs["label"]))
    out: dict[str, dict[str, np.ndarray]] = {}
    for run, group in arts.groupby("run", sort=False):
        if run not in labels:
            continue
        name = group.sort_values("epoch")["name"].iloc[-1]
        read = ctx.artifact(run, name)
        if read is None:
            continue
        arrays = read[0]
        into = out.setdefault(str(labels[run]), {"edges": arrays["edges"]})
        if not np.array_equal(into["edges"], arrays["edges"]):
            continue  # different bins: not summable
        for key, _ in PANELS:
            if key in arrays:
                into[key] = into.get(key, 0) + arrays[key]
    return out


def plot_histograms(summed: dict[str, dict[str, np.ndarray]], colours: dict[str, str], path) -> None:
    """Two panels (clean, attacked), one step line per variant, as densities over the bins."""
    fig = new_figure(figsize=(7.5, 6.0), dpi=110)
    panels = [p for p in PANELS if any(p[0] in h for h in summed.values())]
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        for label, h in summed.items():
            if key not in h:
                continue
            edges, counts = h["edges"], np.asarray(h[key], dtype=float)
            density = counts / max(counts.sum(), 1) / np.diff(edges)
            ax.stairs(density, edges, label=plain_text(label), color=colours.get(label))
        ax.set_title(plain_text(title), fontsize="medium")
        ax.set_ylabel("density")
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize="small", frameon=False)
    fig.axes[-1].set_xlabel("logit value")
    save_png(fig, path)

