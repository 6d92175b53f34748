"""Hyperparameter grids and best configurations as files: CSV (exact), Markdown and LaTeX.

``ablab.analysis.grids`` computes the frames (``FacetTable``, ``BestConfigurations``); this
module only formats them. CSV keeps every float exactly (``exact_csv``); Markdown and LaTeX show
mean ± SD rounded by the standard error (``ablab.report.numbers``), the best cell in bold.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from ablab.analysis.grids import MISSING, BestConfigurations, FacetTable
from ablab.report import numbers
from ablab.report.exact_csv import to_csv
from ablab.report.numbers import format_p, is_scientific
from ablab.report.markdown import escape_markdown, markdown_row


def format_mean_sd(mean: float, sd: float, n: int, scientific: bool = False,
                   column: numbers.Column | None = None) -> str:
    """``1.234 ± 0.056`` rounded by the standard error SD/√n, or to ``column``'s precision
    (``ablab.report.numbers``); — for a missing value."""
    return numbers.format_mean_sd(mean, sd, n, scientific, column=column)


def best_column(frame: pd.DataFrame) -> numbers.Column:
    """One precision for the best table's mean ± SD column (``numbers.column_format``)."""
    ses = [numbers.standard_error(sd, n) for sd, n in zip(frame["sd"], frame["n"])]
    return numbers.column_format(frame["mean"], ses, is_scientific(frame["mean"]))


def grid_is_scientific(tables: list[FacetTable]) -> bool:
    """One notation for every cell of a grid (all its facets)."""
    return is_scientific(np.concatenate([t.mean.to_numpy(dtype=float).ravel() for t in tables]) if tables else [])


def grids_to_csv(tables: list[FacetTable]) -> str:
    """Long format, every float exact: facet columns, row, column, metric, mean, sd, n, n_bad, best."""
    records = []
    for t in tables:
        for r in t.mean.index:
            for c in t.mean.columns:
                records.append({**t.facet, t.rows: r, t.cols: c, "metric": t.metric,
                                "mean": t.mean.loc[r, c], "sd": t.sd.loc[r, c], "n": int(t.n.loc[r, c]),
                                "n_bad": int(t.n_bad.loc[r, c]), "best": t.best == (str(r), str(c))})
    return to_csv(pd.DataFrame(records))


def grid_to_markdown(table: FacetTable, scientific: bool = False) -> str:
    """The facet as a Markdown table of mean ± SD; the best cell in bold; labels shown literally."""
    head = [f"{table.rows} \\ {table.cols}", *map(str, table.mean.columns)]
    lines = [f"**{escape_markdown(table.title)}**", "", markdown_row(head),
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in table.mean.index:
        cells = [escape_markdown(r)]
        for c in table.mean.columns:
            text = escape_markdown(format_mean_sd(table.mean.loc[r, c], table.sd.loc[r, c], int(table.n.loc[r, c]),
                                                  scientific))
            cells.append(f"**{text}**" if table.best == (str(r), str(c)) else text)
        lines.append("| " + " | ".join(cells) + " |")  # cells escaped above, around the bold marks
    return "\n".join(lines) + "\n"


def grid_to_latex(table: FacetTable, scientific: bool = False) -> str:
    """The facet as a LaTeX ``tabular`` (no packages needed); the best cell in bold."""
    ncols = len(table.mean.columns)
    lines = ["\\begin{tabular}{l" + "r" * ncols + "}",
             f"\\multicolumn{{{ncols + 1}}}{{l}}{{{_tex(table.title)}}} \\\\", "\\hline",
             " & ".join([_tex(f"{table.rows} \\ {table.cols}"), *(_tex(str(c)) for c in table.mean.columns)]) + " \\\\",
             "\\hline"]
    for r in table.mean.index:
        cells = [_tex(str(r))]
        for c in table.mean.columns:
            text = _tex_mean_sd(table.mean.loc[r, c], table.sd.loc[r, c], int(table.n.loc[r, c]), scientific)
            cells.append(f"\\textbf{{{text}}}" if table.best == (str(r), str(c)) else text)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def best_to_csv(best: BestConfigurations) -> str:
    """Every ranked variant, every float exact, the tests' p-values as extra columns on the best row."""
    frame = best.ranking.reset_index(drop=True).assign(metric=best.metric)
    frame["p_vs_runner_up"] = np.nan
    frame["p_vs_baseline"] = np.nan
    if len(frame):
        if best.runner_up is not None:
            frame.loc[0, "p_vs_runner_up"] = best.runner_up.p
        if best.baseline is not None:
            frame.loc[0, "p_vs_baseline"] = best.baseline.p
    frame["baseline"] = frame["label"] == best.baseline_label
    return to_csv(frame)


def best_to_markdown(best: BestConfigurations) -> str:
    """The top-k table in Markdown, followed by the tests in words."""
    axes = best.axes or ["label"]
    head = ["rank", *(a if a != "label" else "variant" for a in axes), best.metric, "n"]
    lines = [markdown_row(head), "|" + "|".join(["---:"] + ["---"] * len(axes) + ["---:", "---:"]) + "|"]
    column = best_column(best.table)
    for _, row in best.table.iterrows():
        lines.append(markdown_row([str(row["rank"]), *(str(row[a]) for a in axes),
                                   format_mean_sd(row["mean"], row["sd"], row["n"], column=column), str(row["n"])]))
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {escape_markdown(s)}" for s in describe_tests(best)) + "\n"


def best_to_latex(best: BestConfigurations) -> str:
    """The top-k table as a LaTeX ``tabular``; the tests follow as comments."""
    axes = best.axes or ["label"]
    lines = ["\\begin{tabular}{r" + "l" * len(axes) + "rr}", "\\hline",
             " & ".join(["rank", *(_tex(a if a != "label" else "variant") for a in axes), _tex(best.metric), "n"])
             + " \\\\", "\\hline"]
    column = best_column(best.table)
    for _, row in best.table.iterrows():
        lines.append(" & ".join([str(row["rank"]), *(_tex(str(row[a])) for a in axes),
                                 _tex_mean_sd(row["mean"], row["sd"], row["n"], False, column), str(row["n"])]) + " \\\\")
    lines += ["\\hline", "\\end{tabular}"] + [f"% {_tex_comment(s)}" for s in describe_tests(best)]
    return "\n".join(lines) + "\n"


def describe_tests(best: BestConfigurations) -> list[str]:
    """The best variant's Welch t-tests, one sentence each, plus any note."""
    out = []
    if len(best.table):
        top = best.table["label"].iloc[0]
        other = "the best non-baseline variant" if best.best_is_baseline else "the best baseline variant"
        for what, cmp in (("the runner-up", best.runner_up), (other, best.baseline)):
            if cmp is not None:
                out.append(f"best ({top}) vs {what} ({cmp.against}): difference of means {cmp.delta:+.3g}, "
                           f"Welch t = {cmp.t:.3g}, p = {format_p(cmp.p)} (n = {cmp.n[0]} vs {cmp.n[1]})")
    return out + best.note




_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "×": r"$\times$", "±": r"$\pm$", "—": "--"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _tex_comment(text: str) -> str:
    return str(text).replace("\n", " ")


def _tex_mean_sd(mean: float, sd: float, n: int, scientific: bool, column: numbers.Column | None = None) -> str:
    return format_mean_sd(mean, sd, n, scientific, column).replace(" ± ", r" $\pm$ ").replace(MISSING, "--")
