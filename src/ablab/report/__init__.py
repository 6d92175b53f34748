"""The study report: a page of sections (curves, final table, grids, norm layers …) as HTML.

``write_report(store)`` writes into ``store.path / "report"``::

    index.html          the page (inline CSS, no script, no external resources)
    figures/*.png       the figures of the sections (learning curves, contours, sharpness …)
    tables/*.csv|md|tex the numbers behind the tables; CSV floats are exact (``exact_csv``)
    manifest.json       the files this report wrote; the next one removes those it does not rewrite

The page is every registered section (``ablab.report.sections``; ``ablab list report_section``)
that applies to the study, in a fixed order. The report reads the store only through its API and
never imports the training code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablab.report.context import ReportContext
from ablab.report.html import render_page
from ablab.report.sections import load_sections
from ablab.report.tables import to_text
from ablab.files import write_atomic

__all__ = ["ReportResult", "write_report"]

MANIFEST = "manifest.json"


@dataclass
class ReportResult:
    """Where the report went, and the final table as plain text for the terminal."""

    path: Path
    table_text: str
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def write_report(store: Any) -> ReportResult:
    """Write the HTML report of a study; ``store`` offers path, study(), runs(), metrics() and artifact_path()."""
    ctx = ReportContext(store, Path(store.path) / "report")
    parts = [section.render(ctx) for section in load_sections() if section.applies(ctx)]
    index = ctx.out / "index.html"
    write_atomic(index, render_page(ctx.study.name, parts).encode("utf-8"))
    result = ReportResult(
        path=index,
        table_text=to_text(ctx.agg, ctx.refs, ctx.rule),
        figures=[p for part in parts for p in part.figures],
        tables=[p for part in parts for p in part.tables],
    )
    _replace_manifest(ctx.out, result.figures + result.tables)
    return result


def _replace_manifest(out: Path, written: list[Path]) -> None:
    """Remove the files the previous report listed and this one did not write; list this one's."""
    keep = {p.resolve() for p in written}
    for name in _read_manifest(out):
        path = (out / name).resolve()
        if path not in keep and path.is_relative_to(out.resolve()):  # a damaged manifest never reaches outside
            path.unlink(missing_ok=True)
    names = sorted(str(p.resolve().relative_to(out.resolve())) for p in written)
    write_atomic(out / MANIFEST, json.dumps({"files": names}, indent=1).encode())


def _read_manifest(out: Path) -> list[str]:
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no earlier report, or one from before the manifest
    return [f for f in files if isinstance(f, str)]
