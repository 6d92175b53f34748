"""Runs that continue a stored checkpoint (``init_from``): source run and epoch, restored streams, a selection."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.html import e
from ablab.files import write_atomic


def origins(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Each run's provenance (``store.runs().origin``; empty where the store has none)."""
    return [o if isinstance(o, dict) else {} for o in runs["origin"]] if "origin" in runs else [{}] * len(runs)


def _continued(runs: pd.DataFrame) -> list[tuple[Any, dict, dict]]:
    """(run row, its init_from, its origin) of every run that continues a stored checkpoint."""
    out = []
    if "spec" not in runs:
        return out
    for (_, r), origin in zip(runs.iterrows(), origins(runs)):
        init = r["spec"].get("init_from") if isinstance(r["spec"], dict) else None
        if init:
            out.append((r, init, origin))
    return out


@REPORT_SECTIONS.register("continued_runs")
class ContinuedRuns(ReportSection):
    """Runs that continue a stored checkpoint: source run and epoch, restored streams, and a selection's choice."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(_continued(ctx.runs))

    def render(self, ctx: ReportContext) -> PagePart:
        rows = []
        labels = dict(zip(ctx.runs["run"], ctx.runs["label"] + " #" + ctx.runs["replicate"].astype(str)))
        selection = None
        for r, init, origin in _continued(ctx.runs):
            sel = origin.get("selection") or {}
            selection = selection or (sel or None)
            source = sel.get("source_label") and f"{sel['source_label']} #{sel.get('source_replicate')}"
            info = r["info"] if isinstance(r.get("info"), dict) else {}
            restored = (info.get("continued_from") or {}).get("restored_streams")
            rows.append({
                "run": r["run"], "variant": r["label"], "replicate": int(r["replicate"]),
                "source_run": init["run"], "source": source or labels.get(init["run"], ""),
                "epoch": int(init["epoch"]), "source_study": init.get("study") or "(this study)",
                "restored_streams": " ".join(restored) if restored is not None else "",
                "optimizer_state": "fresh" if info.get("optimizer_state") else "restored",
                "rank": sel.get("rank"), "metric": sel.get("metric"), "value": sel.get("value"),
            })
        table = pd.DataFrame(rows)
        path = ctx.table_path("continued_runs.csv")
        write_atomic(path, to_csv(table).encode())
        head = ""
        if selection:
            head = (f"<p>Selected the {e(selection['k'])} runs with the {'lowest' if selection['mode'] == 'min' else 'highest'} "
                    f"final <code>{e(selection['metric'])}</code> of {e(selection['pool'])} finished runs in "
                    f"<code>{e(selection['study'])}</code>; each continues with its source's seeds.</p>\n")
        cols = ["variant", "replicate", "source", "source_run", "epoch", "restored_streams", "optimizer_state"]
        if selection:
            cols += ["rank", "metric", "value"]
        body = "\n".join("<tr>" + "".join(f"<td>{e(_cell(row[c]))}</td>" for c in cols) + "</tr>" for row in rows)
        return PagePart(
            "<h2>Continued runs</h2>\n" + head
            + "<p class=\"note\">A continued run starts from the source's checkpoint; the streams listed continue "
              "from the saved state, any other starts afresh from the run's own seed at that epoch.</p>\n"
            + "<table class=\"lineage\"><tr>" + "".join(f"<th>{e(c.replace('_', ' '))}</th>" for c in cols)
            + "</tr>\n" + body + "\n</table>",
            tables=[path],
        )


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
