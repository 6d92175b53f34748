"""The fraction of activations each ReLU zeroes over training (probe ``relu_sparsity``), per layer and variant."""

from __future__ import annotations

from ablab.artifacts import RELU_SPARSITY_FILE
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.html import figure_html
from ablab.report.norm_figures import plot_sparsity

FIGURE = "bn_sparsity.png"


@REPORT_SECTIONS.register("relu_sparsity")
class ReluSparsity(ReportSection):
    """Zeroed fraction of every ReLU's activations over training: mean over finished seeds per variant."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(ctx.runs_with(RELU_SPARSITY_FILE))

    def render(self, ctx: ReportContext) -> PagePart:
        series: dict[str, list] = {}
        mine = ctx.runs[ctx.runs["run"].isin(ctx.runs_with(RELU_SPARSITY_FILE))]
        for row in mine.itertuples():
            loaded = ctx.artifact(row.run, RELU_SPARSITY_FILE)
            if loaded is not None:
                arrays, meta = loaded
                series.setdefault(row.label, []).append(
                    (row.status, arrays["steps"], arrays["sparsity"], list(meta.get("layers", []))))
        head = "<h2>ReLU sparsity</h2>\n"
        path = ctx.figure_path(FIGURE)
        if not plot_sparsity(series, ctx.colours, ctx.widths, ctx.panels, path):
            return PagePart(head + "<p class=\"note\">The runs' sparsity records name no ReLU layer.</p>")
        return PagePart(
            head + "<p class=\"note\">Fraction of the activations each ReLU sets to zero "
            "on the training batch, every k steps (probe relu_sparsity): mean over the finished seeds of "
            "each variant; a variant without a finished seed shows its diverged runs dashed, × where "
            "they stopped. Each y-axis is zoomed to its values.</p>\n"
            + figure_html(FIGURE, "ReLU sparsity per layer"),
            figures=[path],
        )
