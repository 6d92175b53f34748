"""The study report: learning curves, the final-metrics table, failures and the spec, as HTML.

``write_report(store)`` writes into ``store.path / "report"``::

    index.html          the page (inline CSS, no script, no external resources)
    figures/*.png       one learning-curve figure per curve metric
    tables/final.csv    the numbers behind the final table, full precision
    tables/final.md     the same table in Markdown

With ``report.baselines`` the final table gets Δ columns per baseline and the curves draw the
baselines in fixed colours; runs with the ``norm_params`` / ``relu_sparsity`` probes add the
norm-layer section (``ablab.report.bn``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablab.analysis.seeds import aggregate, describe_selection, select_final
from ablab.report.bn import write_bn_section
from ablab.report.figures import curve_panels, line_widths, plot_curve, variant_colours
from ablab.report.grids import insert_section, write_grid_section
from ablab.report.html import FigureRef, Page, render_html
from ablab.report.tables import add_baseline_deltas, to_text, write_tables
from ablab.store import write_atomic

__all__ = ["ReportResult", "write_report"]


@dataclass
class ReportResult:
    """Where the report went, and the final table as plain text for the terminal."""

    path: Path
    table_text: str
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def write_report(store: Any) -> ReportResult:
    """Write the HTML report of a study; ``store`` offers path, study(), runs() and metrics()."""
    study, runs, metrics = store.study(), store.runs(), store.metrics()
    settings = study.get("report") or {}
    selection = settings.get("selection", "final")
    select_on = settings.get("select_on", "val.accuracy")
    rule = describe_selection(selection, select_on)
    out = Path(store.path) / "report"

    per_run = select_final(metrics, runs, selection, select_on)
    agg = aggregate(per_run, by="label")
    recorded = [c[: -len(".mean")] for c in agg.columns if c.endswith(".mean")]
    wanted = list(settings.get("metrics") or recorded)
    refs = [r for r in wanted if r in recorded]
    missing = [r for r in wanted if r not in recorded]

    baselines = dict(settings.get("baselines") or {})
    agg = add_baseline_deltas(agg, per_run, refs, baselines)
    labels = list(runs["label"])
    colours = variant_colours(labels, baselines)
    style = {"widths": line_widths(labels, baselines), "panels": curve_panels(labels, baselines)}
    figures = _write_figures(metrics, runs, list(settings.get("curves") or recorded), colours, out / "figures", style)
    table_paths = write_tables(agg, refs, rule, out / "tables")

    page = Page(study=study, runs=runs, metrics=metrics, agg=agg, refs=refs, missing_refs=missing,
                rule=rule, figures=figures, colours=colours)
    grids = write_grid_section(study, runs, metrics, per_run, out)  # heatmaps, best configurations, sharpness
    norms = write_bn_section(store, out, runs, colours, **style)  # γ/β contours, ReLU sparsity, trajectories
    index = out / "index.html"
    write_atomic(index, insert_section(insert_section(render_html(page), grids), norms).encode("utf-8"))
    return ReportResult(
        path=index,
        table_text=to_text(agg, refs, rule),
        figures=[out / f.src for f in figures if f.src is not None] + grids.figures + norms.figures,
        tables=table_paths + grids.tables + norms.tables,
    )


def _write_figures(
    metrics, runs, refs: list[str], colours: dict[str, str], directory: Path, style: dict | None = None
) -> list[FigureRef]:
    """One PNG per curve metric; figures a previous report left behind are removed first."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("curve_*.png"):
        old.unlink()
    figures = []
    for i, ref in enumerate(refs):
        name = f"curve_{i:02d}_{_slug(ref)}.png"
        drawn = plot_curve(metrics, runs, ref, colours, directory / name, **(style or {}))
        figures.append(FigureRef(ref=ref, src=f"figures/{name}" if drawn else None))
    return figures


def _slug(text: str) -> str:
    """A file-name-safe form of a metric reference (the index keeps names unique)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:60] or "metric"
