"""A post-hoc study's source and units: which stored runs (and checkpoints) each unit evaluated."""

from __future__ import annotations

import pandas as pd

from ablab.registry import REPORT_SECTIONS
from ablab.spec.models import member_kind_text
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.labels import plural
from ablab.report.html import e
from ablab.report.sections.continued_runs import origins
from ablab.files import write_atomic


@REPORT_SECTIONS.register("post_hoc_units")
class PostHocUnits(ReportSection):
    """A post-hoc study's source, checkpoint and unit kind, and the stored runs each unit evaluated."""

    def applies(self, ctx: ReportContext) -> bool:
        return ctx.study.post_hoc

    def render(self, ctx: ReportContext) -> PagePart:
        source = ctx.study.source
        kind = " / ".join(member_kind_text(k) for k in ctx.study.unit_kinds)
        rows = []
        for (_, r), origin in zip(ctx.runs.iterrows(), origins(ctx.runs)):
            rows.append({"run": r["run"], "variant": r["label"], "unit": int(r["replicate"]), "status": r["status"],
                         "members": " | ".join(origin.get("members", [])),
                         "member_runs": " ".join(origin.get("member_runs", [])),
                         "epochs": " ".join(str(x) for x in origin.get("epochs", []))})
        path = ctx.table_path("units.csv")
        write_atomic(path, to_csv(pd.DataFrame(rows)).encode())
        shown = rows[:200]
        body = "\n".join(f"<tr><td>{e(x['variant'])}</td><td class=\"num\">{x['unit']}</td><td>{e(x['members'])}</td>"
                         f"<td>{e(x['epochs'])}</td><td>{e(x['status'])}</td></tr>" for x in shown)
        more = f"<p class=\"note\">First 200 of {len(rows)} units; all are in tables/units.csv.</p>" if len(rows) > 200 else ""
        left = (origins(ctx.runs)[0].get("left_out") or []) if len(ctx.runs) else []
        if left:
            more += f"<p class=\"note\">Left out (the groups do not divide the runs): {e(', '.join(left))}.</p>"
        return PagePart(
            "<h2>Post-hoc evaluation</h2>\n"
            f"<p>Stored runs of <code>{e(source.study)}</code> (selector {e(source.runs or 'all finished runs')}, "
            f"checkpoint {e(source.checkpoint)}) evaluated without training, {e(kind)} per unit: "
            f"{e(plural(len(rows), 'unit'))}.</p>\n"
            f"<details><summary>Units and their members</summary>{more}<table class=\"lineage\"><tr><th>variant</th>"
            "<th>unit</th><th>members</th><th>checkpoint epochs</th><th>status</th></tr>\n" + body + "\n</table></details>",
            tables=[path],
        )
