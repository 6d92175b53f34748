"""The black-box transfer matrix of a post-hoc study over pairs of stored runs (seed 002 Tables 3.2/3.4).

Each unit of the ``transfer`` evaluator is an ordered pair (source, target) of stored runs; its
``test.transfer_accuracy`` is the target's accuracy on the source's adversarial examples. The matrix
has one row per target variant and one column per source variant (the seed's layout in Tables 3.2 and 3.4); a cell
is the mean ± SD over the pairs of those variants, shaded by its value. The diagonal pairs two
independently trained runs of one variant, never a run with itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablab.files import write_atomic
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.html import e
from ablab.report.numbers import format_mean_sd

METRIC, SPLIT, TABLE = "transfer_accuracy", "test", "transfer.csv"


@REPORT_SECTIONS.register("transfer")
class Transfer(ReportSection):
    """Black-box transfer accuracy, rows = target variant, columns = source variant, mean ± SD (seed 002 Table 3.2)."""

    def applies(self, ctx: ReportContext) -> bool:
        m = ctx.metrics
        return bool(len(m)) and bool(((m["name"] == METRIC) & (m["split"] == SPLIT)).any())

    def render(self, ctx: ReportContext) -> PagePart:
        cells = transfer_cells(ctx.runs, ctx.metrics)
        path = ctx.table_path(TABLE)
        write_atomic(path, to_csv(cells).encode())
        return PagePart(
            "<h2>Black-box transfer</h2>\n<p class=\"note\">Accuracy of the target (row) on adversarial examples "
            "crafted on the source (column), test split; mean ± SD over the ordered pairs of runs of those variants "
            "(n pairs in the hover title); darker is more robust. The diagonal pairs two independently trained runs "
            "of one variant. As seed 002 Tables 3.2 and 3.4.</p>\n" + matrix_html(cells)
            + "<p class=\"note\">Also as <a href=\"tables/transfer.csv\">CSV</a>.</p>",
            tables=[path])


def transfer_cells(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, source) variant pair: mean, SD (ddof 1) and n of the units' last transfer accuracy."""
    rows = metrics[(metrics["name"] == METRIC) & (metrics["split"] == SPLIT)]
    value = rows.sort_values("step").groupby("run")["value"].last()
    done = runs[runs["run"].isin(value.index) & (runs["status"] == "done")]
    pairs = []
    for run, origin in zip(done["run"], done["origin"]):
        members = (origin or {}).get("members") or []
        if len(members) == 2:
            target, source = (variant(m) for m in (members[1], members[0]))
            pairs.append((target, source, float(value[run])))
    frame = pd.DataFrame(pairs, columns=["target", "source", "value"])
    order = list(dict.fromkeys([*frame["source"], *frame["target"]]))
    out = []
    for target in order:
        for source in order:
            v = frame[(frame["target"] == target) & (frame["source"] == source)]["value"].to_numpy(dtype=float)
            if len(v):
                out.append((target, source, v.mean(), v.std(ddof=1) if len(v) > 1 else np.nan, len(v)))
    return pd.DataFrame(out, columns=["target", "source", "mean", "sd", "n"])


def variant(member: str) -> str:
    """A member's variant label: its origin label without the replicate (``regular #1`` → ``regular``)."""
    return str(member).rsplit(" #", 1)[0]


def matrix_html(cells: pd.DataFrame) -> str:
    """The matrix as an HTML table, each cell shaded from white (0) to green (1) by its mean."""
    order = list(dict.fromkeys([*cells["target"], *cells["source"]]))
    sources = [s for s in order if s in set(cells["source"])]
    head = "<th>target \\ source</th>" + "".join(f"<th>{e(s)}</th>" for s in sources)
    body = []
    for target in [t for t in order if t in set(cells["target"])]:
        tds = [f"<td>{e(target)}</td>"]
        for source in sources:
            row = cells[(cells["target"] == target) & (cells["source"] == source)]
            if not len(row):
                tds.append("<td></td>")
                continue
            mean, sd, n = float(row["mean"].iloc[0]), float(row["sd"].iloc[0]), int(row["n"].iloc[0])
            tds.append(f"<td class=\"num\" style=\"background:{shade(mean)}\" title=\"n={n} pairs\">"
                       f"{e(format_mean_sd(mean, sd, n))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n"


def shade(value: float) -> str:
    """A background colour for an accuracy in [0, 1]: white to green (out-of-range or NaN values: clipped, grey)."""
    if not np.isfinite(value):
        return "#eeeeee"
    t = min(max(value, 0.0), 1.0)
    red, green, blue = (round(255 - t * (255 - c)) for c in (0x4c, 0xaf, 0x50))
    return f"#{red:02x}{green:02x}{blue:02x}"
