"""Report section for hyperparameter grids: heatmap tables, best configurations, sharpness, budgets.

Configured by ``report.grids`` and ``report.best`` in the study spec; the sharpness plot appears
when runs recorded ``record.sharpness``. ``write_grid_section`` writes its figure and tables and
returns the HTML; ``insert_section`` places it in the page before the failures section. Every
string from the spec or the store is escaped.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from ablab.report.html import Section
from ablab.analysis.grids import (
    MISSING,
    BestConfigurations,
    FacetTable,
    axes_in_study_order,
    axis_label,
    best_configurations,
    grid_table,
    varied_axes,
)
from ablab.report.grid_tables import (
    best_to_csv,
    best_to_latex,
    best_to_markdown,
    describe_tests,
    format_mean_sd,
    format_p,
    grid_to_latex,
    grid_to_markdown,
    grids_to_csv,
)
from ablab.errors import SpecError
from ablab.report.figures import _plain_text, _save_png, variant_colours
from ablab.store import write_atomic

SHARPNESS = ("train.sam_sharpness", "train.hessian_top_eigenvalue")
_CMAP = "RdYlGn"  # red (worst) → green (best)
_ANCHOR = "<h2>Diverged and failed runs</h2>"
_CSS = (
    "table.grid td.cell { text-align: right; font-variant-numeric: tabular-nums; min-width: 4.5em; }"
    " table.grid td.best { outline: 3px solid #111; outline-offset: -3px; font-weight: 700; }"
    " table.grid th.corner { font-weight: normal; color: #555; } .pbad { color: #b00020; }"
    " table.grid caption { text-align: left; font-weight: 600; padding-bottom: 0.2em; }"
    " div.facets { display: flex; flex-wrap: wrap; gap: 0.5em 2em; align-items: flex-start; }"
    " table.best tr.baseline td { background: #eef4ff; }\n"
)


def write_grid_section(
    study: dict[str, Any], runs: pd.DataFrame, metrics: pd.DataFrame, per_run: pd.DataFrame, out: Path
) -> Section:
    """Heatmap tables per ``report.grids`` entry, ``report.best``, the sharpness plot and the budgets."""
    settings = study.get("report") or {}
    grids = list(settings.get("grids") or [])
    best_cfg = settings.get("best")
    sharp = [r for r in SHARPNESS if ((metrics["split"] + "." + metrics["name"]) == r).any()] if len(metrics) else []
    if not grids and not best_cfg and not sharp:
        return Section()
    for old in [*(out / "tables").glob("grid_*"), *(out / "tables").glob("best.*"), out / "figures" / "sharpness.png"]:
        old.unlink(missing_ok=True)  # what a previous report of other settings left behind
    runs = axes_in_study_order(runs, study.get("spec") or {})
    section = Section()
    parts = ["<h2>Hyperparameter grids</h2>"]
    for i, cfg in enumerate(grids):
        try:
            tables = grid_table(per_run, runs, cfg["rows"], cfg["cols"], cfg.get("metric", "test.loss"), cfg.get("facets"))
        except SpecError as err:
            parts.append(f"<p class=\"flag\">{_e(err.located(prefix=f'report.grids.{i}').render())}</p>")
            continue
        section.tables += _write_grid_files(tables, out / "tables", i)
        parts.append(_grid_html(tables, i))
    if best_cfg:
        try:
            best = best_configurations(per_run, runs, best_cfg["metric"], best_cfg.get("k", 5), best_cfg.get("baseline"))
        except SpecError as err:
            parts.append(f"<p class=\"flag\">{_e(err.located(prefix='report.best').render())}</p>")
        else:
            section.tables += _write_best_files(best, out / "tables")
            parts.append(_best_html(best, best_cfg.get("baseline")))
    if sharp:
        target = (best_cfg or {}).get("metric") or (grids[0].get("metric") if grids else None) or "test.loss"
        figure = out / "figures" / "sharpness.png"
        if plot_sharpness(metrics, runs, per_run, sharp, target, figure):
            section.figures.append(figure)
            parts.append(_sharpness_html(sharp, target))
    parts.append(_budget_html(runs))
    section.html, section.css = "\n".join(parts), _CSS
    return section


def insert_section(page: str, section: Section) -> str:
    """The page with the section placed before the failures section (or at the end of the body)."""
    if not section.html:
        return page
    at = page.find(_ANCHOR)
    if at < 0:
        at = page.rfind("</body>")
    page = page[:at] + section.html + "\n" + page[at:]
    head = page.find("</style>")
    return page[:head] + section.css + page[head:] if head >= 0 else page


# ---- heatmap tables ----------------------------------------------------------------------------

def _grid_html(tables: list[FacetTable], index: int) -> str:
    first = tables[0]
    lo, hi = _range(tables)
    direction = "highest" if first.higher_is_better else "lowest"
    parts = [
        f"<h3>{_e(first.metric)}: {_e(first.rows)} × {_e(first.cols)}</h3>",
        f"<p class=\"note\">Mean over the finished repeats of each cell; colour from worst (red) to best "
        f"(green) over all facets of this grid ({_num(lo)} … {_num(hi)}); the boxed cell is the facet's best "
        f"({direction} mean). Hover a cell for its SD and n; the SD table is under each facet. "
        f"Also as <a href=\"tables/grid_{index}.csv\">CSV</a>, <a href=\"tables/grid_{index}.md\">Markdown</a> "
        f"and <a href=\"tables/grid_{index}.tex\">LaTeX</a>.</p>",
    ]
    parts.append("<div class=\"facets\">" + "\n".join(_facet_html(t, lo, hi) for t in tables) + "</div>")
    return "\n".join(parts)


def _facet_html(t: FacetTable, lo: float, hi: float) -> str:
    facet = ", ".join(f"{_e(k)} = {_e(v)}" for k, v in t.facet.items())
    corner = f"{t.rows.rsplit('.', 1)[-1]} \\ {t.cols.rsplit('.', 1)[-1]}"  # the full paths are in the heading
    head = (f"<tr><th class=\"corner\" title=\"rows: {_e(t.rows)}; columns: {_e(t.cols)}\">{_e(corner)}</th>"
            + "".join(f"<th>{_e(c)}</th>" for c in t.mean.columns) + "</tr>")
    body, sd_body = [], []
    for r in t.mean.index:
        cells, sd_cells = [], []
        for c in t.mean.columns:
            mean, sd, n, bad = t.mean.loc[r, c], t.sd.loc[r, c], int(t.n.loc[r, c]), int(t.n_bad.loc[r, c])
            tip = f"{format_mean_sd(mean, sd)}, n={n}" + (f", {bad} diverged or failed" if bad else "")
            best = t.best == (str(r), str(c))
            style = _cell_style(mean, lo, hi, t.higher_is_better)
            text = _num(mean) + (" ★" if best else "") + (f" <span class=\"pbad\">({bad}✗)</span>" if bad else "")
            cells.append(f"<td class=\"cell{' best' if best else ''}\"{style} title=\"{_e(tip)}\">{text}</td>")
            sd_cells.append(f"<td class=\"num\">{_e(_num(sd))} (n={n})</td>")
        body.append(f"<tr><th>{_e(r)}</th>{''.join(cells)}</tr>")
        sd_body.append(f"<tr><th>{_e(r)}</th>{''.join(sd_cells)}</tr>")
    caption = f"<caption>{facet}</caption>" if facet else ""
    return (
        f"<div class=\"facet\"><table class=\"grid\">{caption}{head}\n" + "\n".join(body) + "\n</table>\n"
        "<details><summary>SD and n per cell</summary>"
        f"<table class=\"grid-sd\">{head}\n" + "\n".join(sd_body) + "\n</table></details></div>"
    )


def _range(tables: list[FacetTable]) -> tuple[float, float]:
    values = np.concatenate([t.mean.to_numpy(dtype=float).ravel() for t in tables])
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)


def _cell_style(value: float, lo: float, hi: float, up: bool) -> str:
    if not np.isfinite(value):
        return " style=\"background:#e0e0e0\""
    x = 0.5 if hi == lo else (value - lo) / (hi - lo)
    rgba = matplotlib.colormaps[_CMAP](x if up else 1.0 - x)
    light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5
    return f" style=\"background:{to_hex(rgba)};color:{'#111' if light else '#fff'}\""


def _write_grid_files(tables: list[FacetTable], directory: Path, index: int) -> list[Path]:
    paths = [directory / f"grid_{index}.csv", directory / f"grid_{index}.md", directory / f"grid_{index}.tex"]
    write_atomic(paths[0], grids_to_csv(tables).encode())
    write_atomic(paths[1], "\n".join(grid_to_markdown(t) for t in tables).encode())
    write_atomic(paths[2], "\n".join(grid_to_latex(t) for t in tables).encode())
    return paths


# ---- best configurations -----------------------------------------------------------------------

def _best_html(best: BestConfigurations, baseline: dict[str, Any] | None) -> str:
    axes = best.axes or ["label"]
    head = "".join(f"<th>{_e(a if a != 'label' else 'variant')}</th>" for a in ["rank", *axes]) + \
        f"<th>{_e(best.metric)}</th><th>n</th><th></th>"
    rows = [best.table]
    if best.baseline_label is not None and best.baseline_label not in set(best.table["label"]):
        rows.append(best.ranking[best.ranking["label"] == best.baseline_label])
    body = []
    for _, row in pd.concat(rows).iterrows():
        is_base = row["label"] == best.baseline_label
        tds = [f"<td class=\"num\">{int(row['rank'])}</td>"]
        tds += [f"<td title=\"{_e(row['label'])}\">{_e(row[a])}</td>" for a in axes]
        tds += [f"<td class=\"num\">{_e(format_mean_sd(row['mean'], row['sd']))}</td>",
                f"<td class=\"num\">{int(row['n'])}</td>", f"<td>{'baseline' if is_base else ''}</td>"]
        body.append(("<tr class=\"baseline\">" if is_base else "<tr>") + "".join(tds) + "</tr>")
    direction = "highest" if best.higher_is_better else "lowest"
    tests = "".join(f"<li>{_e(s)}</li>" for s in describe_tests(best))
    p_values = []
    versus = "vs best non-baseline" if best.best_is_baseline else "vs baseline"
    for name, cmp in (("vs runner-up", best.runner_up), (versus, best.baseline)):
        if cmp is not None:
            p_values.append(f"<dt>p {name}</dt><dd class=\"p-value\">{_e(format_p(cmp.p))}</dd>")
    base = f" Baseline: the best variant with {_e(_baseline_text(baseline))}." if baseline else ""
    return (
        f"<h3>Best configurations by {_e(best.metric)}</h3>\n"
        f"<p class=\"note\">Top {best.k} of {len(best.ranking)} variants by mean ({direction} first), "
        f"mean ± SD over finished repeats. Tests: Welch's two-sided t-test on the per-run values.{base}</p>\n"
        f"<table class=\"best\"><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n"
        + (f"<dl>{''.join(p_values)}</dl>\n" if p_values else "")
        + f"<ul>{tests}</ul>\n"
        "<p class=\"note\">Also as <a href=\"tables/best.csv\">CSV</a> (every variant), "
        "<a href=\"tables/best.md\">Markdown</a> and <a href=\"tables/best.tex\">LaTeX</a>.</p>"
    )


def _baseline_text(baseline: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {axis_label(v)}" for k, v in baseline.items())


def _write_best_files(best: BestConfigurations, directory: Path) -> list[Path]:
    paths = [directory / "best.csv", directory / "best.md", directory / "best.tex"]
    write_atomic(paths[0], best_to_csv(best).encode())
    write_atomic(paths[1], best_to_markdown(best).encode())
    write_atomic(paths[2], best_to_latex(best).encode())
    return paths


# ---- sharpness ---------------------------------------------------------------------------------

def plot_sharpness(
    metrics: pd.DataFrame, runs: pd.DataFrame, per_run: pd.DataFrame, refs: list[str], target: str, path: Path
) -> bool:
    """One panel per sharpness metric: its value at the end of training vs ``target``, one point per run.

    Points are coloured by the ``sam`` axis when the study varies it, else by variant.
    """
    if target not in per_run.columns:
        return False
    done = runs[runs["status"] == "done"]
    evals = metrics[metrics["run"].isin(done["run"])]
    groups, colours = _colour_groups(done)
    fig = Figure(figsize=(5.2 * len(refs), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    drawn = False
    for i, ref in enumerate(refs):
        split, _, name = ref.partition(".")
        rows = evals[(evals["split"] == split) & (evals["name"] == name)]
        x = rows.sort_values("step").groupby("run")["value"].last()
        y = per_run.set_index("run")[target]
        ax = fig.add_subplot(1, len(refs), i + 1)
        for group, members in groups.items():
            ids = [r for r in members if r in x.index and r in y.index]
            xs, ys = x.reindex(ids).to_numpy(dtype=float), y.reindex(ids).to_numpy(dtype=float)
            ok = np.isfinite(xs) & np.isfinite(ys)
            if ok.any():
                ax.scatter(xs[ok], ys[ok], s=18, alpha=0.8, color=colours[group], label=_plain_text(group))
                drawn = True
        ax.set_xlabel(_plain_text(f"{ref} (end of training)"))
        ax.set_ylabel(_plain_text(f"final {target}"))
        ax.grid(True, alpha=0.3)
        if i == len(refs) - 1 and groups:
            ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if drawn:
        _save_png(fig, path)
    return drawn


def _colour_groups(done: pd.DataFrame) -> tuple[dict[str, list[str]], dict[str, str]]:
    """run ids per colour group: the ``sam`` axis's values, else variants (one colour if many)."""
    by_sam = "sam" in varied_axes(done) if len(done) else False
    if by_sam:
        keys = [f"sam: {axis_label((a or {}).get('sam'))}" for a in done["axes"]]
    elif done["label"].nunique() <= 20:
        keys = list(done["label"])
    else:
        keys = ["run"] * len(done)
    groups: dict[str, list[str]] = {}
    for key, run in zip(keys, done["run"]):
        groups.setdefault(str(key), []).append(run)
    return groups, variant_colours(list(groups))


def _sharpness_html(refs: list[str], target: str) -> str:
    return (
        "<h3>Sharpness at the end of training</h3>\n"
        f"<p class=\"note\">{_e(', '.join(refs))} measured on fixed training batches after the last step "
        f"(<code>record.sharpness</code>) against the final {_e(target)}; one point per finished run.</p>\n"
        f"<figure><img src=\"figures/sharpness.png\" alt=\"sharpness vs final {_e(target)}\"></figure>"
    )


# ---- budgets -----------------------------------------------------------------------------------

def _budget_html(runs: pd.DataFrame) -> str:
    rows = []
    for label, group in runs.groupby("label", sort=False):
        infos = [i if isinstance(i, dict) else {} for i in group["info"]] if "info" in group else []
        cells = [_span([i.get(k) for i in infos]) for k in ("epochs", "steps", "gradient_evaluations")]
        seconds = pd.to_numeric(group.get("duration_s"), errors="coerce")
        mean_s = f"{seconds.mean():.1f}" if seconds.notna().any() else MISSING
        rows.append(f"<tr><td>{_e(label)}</td><td class=\"num\">{len(group)}</td>"
                    + "".join(f"<td class=\"num\">{_e(c)}</td>" for c in cells)
                    + f"<td class=\"num\">{mean_s}</td></tr>")
    return (
        f"<details><summary>Compute budget per variant ({len(rows)} variants)</summary>\n"
        "<p class=\"note\">From each run's plan: a SAM step costs two gradient evaluations, so under "
        "<code>budget_epochs</code> SAM runs take half the steps.</p>\n"
        "<table class=\"budget\"><tr><th>variant</th><th>runs</th><th>epochs</th><th>steps</th>"
        "<th>gradient evaluations</th><th>mean time (s)</th></tr>\n" + "\n".join(rows) + "\n</table></details>"
    )


def _span(values: list[Any]) -> str:
    known = sorted({int(v) for v in values if isinstance(v, (int, float)) and np.isfinite(v)})
    if not known:
        return MISSING
    return str(known[0]) if len(known) == 1 else f"{known[0]}–{known[-1]}"


def _num(x: float) -> str:
    return f"{float(x):#.4g}" if x is not None and np.isfinite(float(x)) else MISSING


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
