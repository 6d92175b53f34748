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
        table = final_table_html(ctx)
        missing = ""
        if ctx.missing_refs:
            missing = f"<p class=\"note\">Not recorded by any run: {', '.join(e(r) for r in ctx.missing_refs)}.</p>"
        packing = tables.packing_note(ctx.runs)
        missing += f"<p class=\"note\">{e(packing)}</p>" if packing else ""
        return PagePart(
            "<h2>Final metrics</h2>\n"
            f"<p>{e(tables.caption(ctx.rule, ctx.agg))}</p>\n"
            + table + missing
            + "<p class=\"note\">Also as <a href=\"tables/final.csv\">CSV</a> and "
            "<a href=\"tables/final.md\">Markdown</a>.</p>",
            tables=[csv_path, md_path], css=CSS,
        )


# the final table may use the window's whole width (it is the study's result), not only the text column
CSS = """
.final { width: calc(100vw - 3em); max-width: 1800px; position: relative; left: 50%; transform: translateX(-50%); }
.final table { margin: 0.8em auto; font-size: 14px; width: fit-content; }
.final .delta { font-size: 12px; color: #444; white-space: nowrap; }
.final th .delta { font-weight: normal; }
"""


def final_table_html(ctx: ReportContext) -> str:
    """Per variant a row; per metric one cell: mean ± SD, then one brief line per baseline (Δ and p; the
    whole test, Holm-adjusted p and both n in its hover title); the counts."""
    agg, refs = ctx.agg, ctx.refs
    roles = [r for r in tables.BASELINE_ROLES if f"baseline_{r}" in agg] + [
        c[len("baseline_"):] for c in agg.columns if str(c).startswith("baseline_")
        and c[len("baseline_"):] not in tables.BASELINE_ROLES]
    cols = tables.column_formats(agg, refs)
    head = ["<th>variant</th>"]
    for ref in refs:
        sub = "".join(f"<div class=\"delta\">Δ vs {e(role)}, p</div>" for role in roles if (ref, role) in cols)
        head.append(f"<th>{e(ref)}{sub}</th>")
    head += ["<th>n</th>", "<th>diverged</th>", "<th>failed</th>"]
    body = []
    for _, row in agg.iterrows():
        tds = [f"<td>{swatch(ctx.colours, row['label'])}{e(row['label'])}</td>"]
        for ref in refs:
            main = tables.format_mean_sd(row[f"{ref}.mean"], row[f"{ref}.sd"], int(row[f"{ref}.n"]), int(row["n"]),
                                         column=cols[ref])
            lines = []
            for role in roles:
                if (ref, role) in cols:
                    brief, detail = tables.delta_brief(row, ref, role, cols[(ref, role)])
                    lines.append(f"<div class=\"delta\" title=\"{e(detail)}\">{e(role)}: {e(brief)}</div>")
            tds.append(f"<td class=\"num\">{e(main)}{''.join(lines)}</td>")
        counts = [str(int(row[c])) for c in ("n", "n_diverged", "n_failed")]
        tds.append(f"<td class=\"num\">{counts[0]}</td>")
        tds += [f"<td class=\"num{'' if c == '0' else ' flag'}\">{c}</td>" for c in counts[1:]]
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<div class=\"final\"><table><tr>{''.join(head)}</tr>\n" + "\n".join(body) + "\n</table></div>\n"
