"""Seed 002 ch. 2: test error per mixing arm beside the thesis (Tables 2.1–2.2), row vs column twins, Fig. 2.2."""

from __future__ import annotations

import pandas as pd

from ablab.analysis.mixing import (
    ERROR_FROM, THESIS_ERROR, dataset_of, error_table, has_mixing_axis, methods_by_label, row_column_pairs,
)
from ablab.errors import AblabError
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.html import e, swatch
from ablab.report.mixing_figure import draw
from ablab.report.numbers import Column, column_format, format_delta, format_fixed, standard_error
from ablab.report.tables import format_mean_sd
from ablab.files import write_atomic

TABLE, PAIRS, FIGURE = "mixing.csv", "mixing_row_column.csv", "mixing_examples.png"


def _html_table(header: list[str], rows: list[list[str]], first: list[str] | None = None) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for i, cells in enumerate(rows):
        lead = first[i] if first else e(cells[0])
        body.append(f"<tr><td>{lead}</td>" + "".join(f"<td class=\"num\">{e(c)}</td>" for c in cells[1:]) + "</tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n"


def _column(means: pd.Series, sds: pd.Series, ns: pd.Series) -> Column:
    """One precision for a column of error % (``ablab.report.numbers.column_format``)."""
    return column_format(means, [standard_error(sd, n) for sd, n in zip(sds, ns)])


@REPORT_SECTIONS.register("mixing")
class Mixing(ReportSection):
    """Mixed-example augmentation: error per arm vs the baseline (Welch) and the thesis, row vs column, Fig. 2.2."""

    def applies(self, ctx: ReportContext) -> bool:
        return "spec" in ctx.runs and has_mixing_axis(ctx.runs)

    def render(self, ctx: ReportContext) -> PagePart:
        table = error_table(ctx.per_run, ctx.runs)
        pairs = row_column_pairs(ctx.per_run, ctx.runs)
        paths = [ctx.table_path(TABLE), ctx.table_path(PAIRS)]
        write_atomic(paths[0], to_csv(table).encode())
        write_atomic(paths[1], to_csv(pairs).encode())
        figure_html, figures = self._figure(ctx)
        return PagePart("<h2>Mixed-example augmentation</h2>\n" + self._error_html(ctx, table) + self._pairs_html(pairs)
                    + figure_html, figures=figures, tables=paths)

    def _error_html(self, ctx: ReportContext, table: pd.DataFrame) -> str:
        dataset = dataset_of(ctx.runs)
        has_thesis = dataset in THESIS_ERROR
        if ERROR_FROM not in ctx.per_run:
            return f"<p class=\"note\">No run recorded {e(ERROR_FROM)}: no error table.</p>\n"
        header = ["variant", "thesis name", "test error % (mean ± SD)", "n", "Δ vs baseline (Welch p)"]
        header += [f"thesis ({dataset}, 225 epochs)"] if has_thesis else []
        rows = []
        column = _column(table["error_mean"], table["error_sd"], table["n"])
        for r in table.itertuples():
            cells = [r.label, r.thesis_name, format_mean_sd(r.error_mean, r.error_sd, r.n, r.n, column=column), str(r.n),
                     "baseline" if r.method == "baseline" else format_delta(r.delta, r.p)]
            rows.append(cells + ([format_fixed(r.thesis_error, 1)] if has_thesis else []))
        first = [f"{swatch(ctx.colours, label)}{e(label)}" for label in table["label"]]
        epochs = sorted({int(x) for x in ctx.per_run["epoch"].dropna()})
        at = ", ".join(map(str, epochs))
        return (f"<p>Test error = 100·(1 − {e(ERROR_FROM)}) at the {e(ctx.rule)} (epoch {e(at)}); "
                "mean ± SD over finished seeds, Δ = mean − the baseline's mean in points, Welch's two-sided p. "
                "Sorted as the thesis' Tables 2.1–2.2: the baseline, the prior work (mixup, BC+), then by error, "
                "highest first" + (f"; the thesis column is its {e(dataset)} table (mean of 3 runs, final step)"
                                   if has_thesis else "") + ".</p>\n"
                + _html_table(header, rows, first)
                + f"<p class=\"note\">Also as <a href=\"tables/{TABLE}\">CSV</a>.</p>\n")

    def _pairs_html(self, pairs: pd.DataFrame) -> str:
        if pairs.empty:
            return ""
        row_col = _column(pairs["row_error_mean"], pairs["row_error_sd"], pairs["row_n"])
        col_col = _column(pairs["column_error_mean"], pairs["column_error_sd"], pairs["column_n"])
        rows = [[f"{r.row_method} vs {r.column_method}",
                 format_mean_sd(r.row_error_mean, r.row_error_sd, r.row_n, r.row_n, column=row_col),
                 format_mean_sd(r.column_error_mean, r.column_error_sd, r.column_n, r.column_n, column=col_col),
                 format_delta(r.delta, r.p)] for r in pairs.itertuples()]
        return ("<h3>Rows vs columns</h3>\n<p>The thesis' claim (seed 002 §2.4, Tables 2.1 and 2.2): each row-based method beats its column twin "
                "on both CIFARs, Δ = row − column &lt; 0.</p>\n"
                + _html_table(["pair", "row error %", "column error %", "Δ row − column (Welch p)"], rows)
                + f"<p class=\"note\">Also as <a href=\"tables/{PAIRS}\">CSV</a>.</p>\n")

    def _figure(self, ctx: ReportContext) -> tuple[str, list]:
        methods = methods_by_label(ctx.runs)
        first = ctx.runs.drop_duplicates("label")
        arms = [(r.label, r.spec["augment"]) for r in first.itertuples() if r.label in methods]
        path = ctx.figure_path(FIGURE)
        try:
            titles, _ = draw(arms, first.iloc[0]["spec"]["data"], path)
        except (AblabError, OSError) as err:  # e.g. the data folder moved since the runs
            return f"<p class=\"note\">No example figure: {e(str(err))}</p>\n", []
        order = "; ".join(f"{i + 1}. {t}" for i, t in enumerate(titles))
        return ("<h3>What each arm makes of the same two images</h3>\n"
                f"<figure><img src=\"figures/{FIGURE}\" alt=\"mixed examples per arm\"><figcaption>"
                f"Row by row, each tile labelled with its number and arm: {e(order)}. Drawn now by each arm's own code and parameters on two test images "
                "(after the runs' normalisation, without crop and flip), with one fixed seed (the same draws for "
                "every arm), as the thesis' "
                "Fig. 2.2; one scale for all tiles except BC+ and VH-BC+ (each on its own range).</figcaption>"
                "</figure>\n", [path])
