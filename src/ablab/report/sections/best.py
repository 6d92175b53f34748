"""The best configurations (``report.best``): the top k variants, Welch tests against runner-up and baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ablab.analysis.grids import BestConfigurations, axes_in_study_order, axis_label, best_configurations
from ablab.analysis.multiple_tests import holm_adjust
from ablab.errors import SpecError
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.grid_tables import (
    best_column,
    best_to_csv,
    best_to_latex,
    best_to_markdown,
    describe_tests,
    format_mean_sd,
    format_p,
)
from ablab.report.html import e
from ablab.files import write_atomic

_CSS = "table.best tr.baseline td { background: #eef4ff; }\n"


@REPORT_SECTIONS.register("best")
class Best(ReportSection):
    """The k best variants by a metric, the best one tested against the runner-up and a baseline."""

    def applies(self, ctx: ReportContext) -> bool:
        return ctx.settings.best is not None

    def render(self, ctx: ReportContext) -> PagePart:
        cfg = ctx.settings.best
        runs = axes_in_study_order(ctx.runs, ctx.study.axes)
        metric = cfg.metric
        try:
            best = best_configurations(ctx.per_run, runs, metric, cfg.k, cfg.baseline, ctx.directions)
        except SpecError as err:
            return PagePart(f"<h2>Best configurations by {e(metric)}</h2>\n"
                        f"<p class=\"flag\">{e(err.located(prefix='report.best').render())}</p>")
        return PagePart(_best_html(best, cfg.baseline), css=_CSS, tables=_write_files(ctx, best))


def _write_files(ctx: ReportContext, best: BestConfigurations) -> list[Path]:
    paths = [ctx.table_path(f"best.{ext}") for ext in ("csv", "md", "tex")]
    write_atomic(paths[0], best_to_csv(best).encode())
    write_atomic(paths[1], best_to_markdown(best).encode())
    write_atomic(paths[2], best_to_latex(best).encode())
    return paths


def _best_html(best: BestConfigurations, baseline: dict[str, Any] | None) -> str:
    axes = best.axes or ["label"]
    head = "".join(f"<th>{e(a if a != 'label' else 'variant')}</th>" for a in ["rank", *axes]) + \
        f"<th>{e(best.metric)}</th><th>n</th><th></th>"
    rows = [best.table]
    if best.baseline_label is not None and best.baseline_label not in set(best.table["label"]):
        rows.append(best.ranking[best.ranking["label"] == best.baseline_label])
    body = []
    shown = pd.concat(rows)
    column = best_column(shown)  # one precision for the column
    for _, row in shown.iterrows():
        is_base = row["label"] == best.baseline_label
        tds = [f"<td class=\"num\">{int(row['rank'])}</td>"]
        tds += [f"<td title=\"{e(row['label'])}\">{e(row[a])}</td>" for a in axes]
        tds += [f"<td class=\"num\">{e(format_mean_sd(row['mean'], row['sd'], row['n'], column=column))}</td>",
                f"<td class=\"num\">{int(row['n'])}</td>", f"<td>{'baseline' if is_base else ''}</td>"]
        body.append(("<tr class=\"baseline\">" if is_base else "<tr>") + "".join(tds) + "</tr>")
    direction = "highest" if best.higher_is_better else "lowest"
    sentences = "".join(f"<li>{e(s)}</li>" for s in describe_tests(best))
    p_values = []
    versus = "vs best non-baseline" if best.best_is_baseline else "vs baseline"
    tests = [(name, cmp) for name, cmp in (("vs runner-up", best.runner_up), (versus, best.baseline)) if cmp is not None]
    for (name, cmp), holm in zip(tests, holm_adjust([cmp.p for _, cmp in tests])):
        p_values.append(f"<dt>p {name}</dt><dd><span class=\"p-value\">{e(format_p(cmp.p))}</span> "
                        f"(Holm over these {len(tests)} tests: {e(format_p(holm))}; n = {cmp.n[0]} vs {cmp.n[1]})</dd>")
    base = f" Baseline: the best variant with {e(_baseline_text(baseline))}." if baseline else ""
    return (
        f"<h2>Best configurations by {e(best.metric)}</h2>\n"
        f"<p class=\"note\">Top {best.k} of {len(best.ranking)} variants by mean ({direction} first), "
        "mean ± SD over finished repeats, rounded to the second significant digit of the standard error "
        f"SD/√n. Tests: Welch's two-sided t-test on the per-run values.{base}</p>\n"
        f"<table class=\"best\"><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n"
        + (f"<dl>{''.join(p_values)}</dl>\n" if p_values else "")
        + f"<ul>{sentences}</ul>\n"
        "<p class=\"note\">Also as <a href=\"tables/best.csv\">CSV</a> (every variant), "
        "<a href=\"tables/best.md\">Markdown</a> and <a href=\"tables/best.tex\">LaTeX</a>.</p>"
    )


def _baseline_text(baseline: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {axis_label(v)}" for k, v in baseline.items())
