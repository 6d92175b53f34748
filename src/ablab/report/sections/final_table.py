"""The final-metrics table: mean ± SD over seeds per variant, Δ to the baselines, CSV and Markdown beside."""

from __future__ import annotations

from ablab.registry import REPORT_SECTIONS
from ablab.report import tables
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.html import e, swatch
from ablab.files import write_atomic


@REPORT_SECTIONS.register("final_table")
class FinalTable(ReportSection):
    """Per variant: each 'report.metrics' as mean ± SD at the selected epoch, Δ and p per baseline, counts."""

    def render(self, ctx: ReportContext) -> PagePart:
        csv_path, md_path = ctx.table_path("final.csv"), ctx.table_path("final.md")
        write_atomic(csv_path, to_csv(tables.to_csv_frame(ctx.agg, ctx.refs, ctx.rule)).encode())
        write_atomic(md_path, tables.to_markdown(ctx.agg, ctx.refs, ctx.rule).encode())
        header, rows = tables.table_rows(ctx.agg, ctx.refs)
        head = "".join(f"<th>{e(h)}</th>" for h in header)
        body = []
        for label, cells in zip(ctx.agg["label"], rows):
            tds = [f"<td>{swatch(ctx.colours, label)}{e(cells[0])}</td>"]
            tds += [f"<td class=\"num\">{e(c)}</td>" for c in cells[1:-2]]
            tds += [f"<td class=\"num{'' if c == '0' else ' flag'}\">{e(c)}</td>" for c in cells[-2:]]
            body.append("<tr>" + "".join(tds) + "</tr>")
        missing = ""
        if ctx.missing_refs:
            missing = f"<p class=\"note\">Not recorded by any run: {', '.join(e(r) for r in ctx.missing_refs)}.</p>"
        return PagePart(
            "<h2>Final metrics</h2>\n"
            f"<p>{e(tables.caption(ctx.rule, ctx.agg))}</p>\n"
            f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n" + missing
            + "<p class=\"note\">Also as <a href=\"tables/final.csv\">CSV</a> and "
            "<a href=\"tables/final.md\">Markdown</a>.</p>",
            tables=[csv_path, md_path],
        )
