"""Heatmap tables of hyperparameter grids (``report.grids``): mean over repeats per cell, the best boxed.

Each entry names two varied axes (rows, columns) and a metric; every other varied axis (or the
listed ``facets``) makes one table per value combination. Colours run from the worst (red) to
the best (green) mean over all facets of a grid; CSV, Markdown and LaTeX files sit beside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ablab.analysis.grids import FacetTable, axes_in_study_order, grid_table
from ablab.errors import SpecError
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.grid_tables import format_mean_sd, grid_is_scientific, grid_to_latex, grid_to_markdown, grids_to_csv
from ablab.report.html import e
from ablab.report.numbers import format_value, standard_error
from ablab.files import write_atomic

_CMAP = "RdYlGn"  # red (worst) → green (best)
_CSS = (
    "table.grid td.cell { text-align: right; font-variant-numeric: tabular-nums; min-width: 4.5em; }"
    " table.grid td.best { outline: 3px solid #111; outline-offset: -3px; font-weight: 700; }"
    " table.grid th.corner { font-weight: normal; color: #555; } .pbad { color: #b00020; }"
    " table.grid caption { text-align: left; font-weight: 600; padding-bottom: 0.2em; }"
    " div.facets { display: flex; flex-wrap: wrap; gap: 0.5em 2em; align-items: flex-start; }\n"
)


@REPORT_SECTIONS.register("grids")
class Grids(ReportSection):
    """Heatmap tables per 'report.grids' entry: mean ± SD over repeats per cell, one table per facet."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(ctx.settings.grids)

    def render(self, ctx: ReportContext) -> PagePart:
        runs = axes_in_study_order(ctx.runs, ctx.study.axes)
        part = PagePart("", css=_CSS)
        html = ["<h2>Hyperparameter grids</h2>"]
        for i, cfg in enumerate(ctx.settings.grids):
            try:
                facets = grid_table(ctx.per_run, runs, cfg.rows, cfg.cols, cfg.metric, cfg.facets, ctx.directions)
            except SpecError as err:
                html.append(f"<p class=\"flag\">{e(err.located(prefix=f'report.grids.{i}').render())}</p>")
                continue
            part.tables += _write_files(ctx, facets, i)
            html.append(_grid_html(facets, i))
        part.html = "\n".join(html)
        return part


def _write_files(ctx: ReportContext, facets: list[FacetTable], index: int) -> list[Path]:
    paths = [ctx.table_path(f"grid_{index}.{ext}") for ext in ("csv", "md", "tex")]
    write_atomic(paths[0], grids_to_csv(facets).encode())
    sci = grid_is_scientific(facets)
    write_atomic(paths[1], "\n".join(grid_to_markdown(t, sci) for t in facets).encode())
    write_atomic(paths[2], "\n".join(grid_to_latex(t, sci) for t in facets).encode())
    return paths


def _grid_html(facets: list[FacetTable], index: int) -> str:
    first = facets[0]
    lo, hi = _range(facets)
    sci = grid_is_scientific(facets)
    direction = "highest" if first.higher_is_better else "lowest"
    parts = [
        f"<h3>{e(first.metric)}: {e(first.rows)} × {e(first.cols)}</h3>",
        f"<p class=\"note\">Mean over the finished repeats of each cell; colour from worst (red) to best "
        f"(green) over all facets of this grid ({format_value(lo, scientific=sci)} … "
        f"{format_value(hi, scientific=sci)}); the boxed cell is the facet's best ({direction} mean); each mean is "
        "rounded to the second significant digit of its standard error SD/√n. Hover a cell for its SD and n; "
        "the SD table is under each facet. "
        f"Also as <a href=\"tables/grid_{index}.csv\">CSV</a>, <a href=\"tables/grid_{index}.md\">Markdown</a> "
        f"and <a href=\"tables/grid_{index}.tex\">LaTeX</a>.</p>",
    ]
    parts.append("<div class=\"facets\">" + "\n".join(_facet_html(t, lo, hi, sci) for t in facets) + "</div>")
    return "\n".join(parts)


def _facet_html(t: FacetTable, lo: float, hi: float, sci: bool) -> str:
    facet = ", ".join(f"{e(k)} = {e(v)}" for k, v in t.facet.items())
    corner = f"{t.rows.rsplit('.', 1)[-1]} \\ {t.cols.rsplit('.', 1)[-1]}"  # the full paths are in the heading
    head = (f"<tr><th class=\"corner\" title=\"rows: {e(t.rows)}; columns: {e(t.cols)}\">{e(corner)}</th>"
            + "".join(f"<th>{e(c)}</th>" for c in t.mean.columns) + "</tr>")
    body, sd_body = [], []
    for r in t.mean.index:
        cells, sd_cells = [], []
        for c in t.mean.columns:
            mean, sd, n, bad = t.mean.loc[r, c], t.sd.loc[r, c], int(t.n.loc[r, c]), int(t.n_bad.loc[r, c])
            se = standard_error(sd, n)
            tip = f"{format_mean_sd(mean, sd, n, sci)}, n={n}" + (f", {bad} diverged or failed" if bad else "")
            best = t.best == (str(r), str(c))
            style = _cell_style(mean, lo, hi, t.higher_is_better)
            text = e(format_value(mean, se, sci)) + (" ★" if best else "")
            text += f" <span class=\"pbad\">({bad}✗)</span>" if bad else ""
            cells.append(f"<td class=\"cell{' best' if best else ''}\"{style} title=\"{e(tip)}\">{text}</td>")
            sd_cells.append(f"<td class=\"num\">{e(format_value(sd, se, sci))} (n={n})</td>")
        body.append(f"<tr><th>{e(r)}</th>{''.join(cells)}</tr>")
        sd_body.append(f"<tr><th>{e(r)}</th>{''.join(sd_cells)}</tr>")
    caption = f"<caption>{facet}</caption>" if facet else ""
    return (
        f"<div class=\"facet\"><table class=\"grid\">{caption}{head}\n" + "\n".join(body) + "\n</table>\n"
        "<details><summary>SD and n per cell</summary>"
        f"<table class=\"grid-sd\">{head}\n" + "\n".join(sd_body) + "\n</table></details></div>"
    )


def _range(facets: list[FacetTable]) -> tuple[float, float]:
    values = np.concatenate([t.mean.to_numpy(dtype=float).ravel() for t in facets])
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)


def _cell_style(value: float, lo: float, hi: float, up: bool) -> str:
    import matplotlib
    from matplotlib.colors import to_hex

    if not np.isfinite(value):
        return " style=\"background:#e0e0e0\""
    x = 0.5 if hi == lo else (value - lo) / (hi - lo)
    rgba = matplotlib.colormaps[_CMAP](x if up else 1.0 - x)
    light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5
    return f" style=\"background:{to_hex(rgba)};color:{'#111' if light else '#fff'}\""
