"""Learning curves: one figure per metric, mean and its 95 % CI over seeds per variant, diverged runs alone."""

from __future__ import annotations

import re

from ablab.registry import REPORT_SECTIONS
from ablab.spec.models import ReportSettings
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.figures import MAX_BAND_VARIANTS, MIN_BAND_N, plot_curve
from ablab.report.html import e, figure_html
from ablab.report.plot_scale import BAND_TEXT, LOG_RATIO


@REPORT_SECTIONS.register("curves")
class Curves(ReportSection):
    """One figure per 'report.curves' metric (default: every recorded one); a missing one is named."""

    def applies(self, ctx: ReportContext) -> bool:
        return not ctx.study.post_hoc and bool(curve_refs(ctx))  # a post-hoc unit is one evaluation: no curve

    def render(self, ctx: ReportContext) -> PagePart:
        part = PagePart("")
        html = ["<h2>Learning curves</h2>",
                f"<p class=\"note\">Lines: mean over the finished seeds of each variant; {e(BAND_TEXT)}, drawn "
                f"light, only for variants with at least {MIN_BAND_N} seeds and in panels of at most "
                f"{MAX_BAND_VARIANTS} variants. A y-axis is logarithmic where the means span more than a factor of "
                f"{LOG_RATIO:g}, and zoomed to the drawn values; where the last epochs' means lie too close "
                "together to tell apart, a second row zooms into them. "
                "A diverged run is drawn as its own thin dashed curve that stops where it diverged (×). "
                "Click a figure for its full size.</p>"]
        for i, ref in enumerate(curve_refs(ctx)):
            name = f"curve_{i:02d}_{_slug(ref)}.png"
            path = ctx.figure_path(name)
            notes: list[str] = []
            if plot_curve(ctx.metrics, ctx.runs, ref, ctx.colours, path, widths=ctx.widths, panels=ctx.panels,
                          notes=notes):
                part.figures.append(path)
                caption = (f"{e(ref)}: " + "; ".join(e(n) for n in notes) + ".") if notes else ""
                html.append(figure_html(name, f"learning curve of {ref}", caption))
            else:
                html.append(f"<p class=\"note\">{e(ref)}: not recorded.</p>")
        part.html = "\n".join(html)
        return part


def curve_refs(ctx: ReportContext) -> list[str]:
    """``report.curves`` as written; left at its default (or empty), every metric some run recorded.

    A stored study holds its whole ``report`` block, so a default list is told by its value: a default
    metric no run recorded is left out, not shown as "not recorded"."""
    written = list(ctx.settings.curves)
    if written and written != ReportSettings.model_fields["curves"].default:
        return written
    return list(ctx.recorded)


def _slug(text: str) -> str:
    """A file-name-safe form of a metric reference (the index keeps names unique)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:60] or "metric"
