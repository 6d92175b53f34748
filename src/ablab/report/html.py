"""The report page: one self-contained HTML file with inline CSS, no script, figures as PNG beside it.

Every string that comes from a spec or the store goes through ``_e`` (``html.escape`` with
quotes) before it reaches the page; the page also forbids scripts through its CSP.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ablab.report import tables

MISSING = tables.MISSING
STATUS_ORDER = ("done", "diverged", "failed", "running", "pending")
_CSP = "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'"

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: -0.1em; }
.flag { color: #b00020; font-weight: 600; }
.note { color: #555; } figure { margin: 1.2em 0; } figure img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 13px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dt { color: #555; }
"""


@dataclass
class Section:
    """An optional report section: its HTML (empty when there is nothing to show), its CSS and the files it wrote."""

    html: str = ""
    css: str = ""
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


@dataclass
class FigureRef:
    """One curve metric and the page-relative path of its PNG (None: nothing recorded)."""

    ref: str
    src: str | None


@dataclass
class Page:
    """Everything the page shows; built by ``write_report``."""

    study: dict[str, Any]
    runs: pd.DataFrame
    metrics: pd.DataFrame
    agg: pd.DataFrame
    refs: list[str]
    missing_refs: list[str]
    rule: str
    figures: list[FigureRef]
    colours: dict[str, str]


def render_html(page: Page) -> str:
    """The whole report as one HTML string."""
    name = _e(page.study.get("name") or "study")
    body = "\n".join([
        _header(page), _variants(page), _curves(page), _final_table(page), _problems(page), _spec(page),
    ])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n"
        f"<title>{name} — ablab report</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _header(page: Page) -> str:
    study, runs = page.study, page.runs
    counts = runs["status"].value_counts()
    statuses = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts.index) - set(STATUS_ORDER))
    by_status = ", ".join(f"{_e(s)} {int(counts[s])}" for s in statuses) or "none"
    items = [("file", _e(study.get("file") or MISSING)), ("runs", f"{len(runs)} ({by_status})")]
    for column, title in (("code_version", "code version"), ("device", "device")):
        if column in runs:
            values = sorted({str(v) for v in runs[column].dropna() if str(v)})
            if values:
                items.append((title, ", ".join(_e(v) for v in values)))
    rows = "".join(f"<dt>{title}</dt><dd>{value}</dd>" for title, value in items)
    description = study.get("description") or ""
    return (
        f"<h1>{_e(study.get('name') or 'study')}</h1>\n"
        + (f"<p>{_e(description)}</p>\n" if description else "")
        + f"<dl>{rows}</dl>"
    )


def _variants(page: Page) -> str:
    rows = []
    for label, group in page.runs.groupby("label", sort=False):
        counts = group["status"].value_counts()
        status = ", ".join(f"{_e(s)} {int(counts[s])}" for s in counts.index)
        axes = _axes_text(group["axes"].iloc[0]) if "axes" in group else ""
        rows.append(f"<tr><td>{_swatch(page.colours, label)}{_e(label)}</td><td>{axes}</td>"
                    f"<td class=\"num\">{len(group)}</td><td>{status}</td></tr>")
    return (
        "<h2>Variants</h2>\n<table><tr><th>variant</th><th>axes</th><th>runs</th><th>status</th></tr>\n"
        + "\n".join(rows) + "\n</table>"
    )


def _curves(page: Page) -> str:
    parts = ["<h2>Learning curves</h2>",
             "<p class=\"note\">Lines: mean over the finished seeds of each variant; band: ±1 SD. "
             "A diverged run is drawn as its own thin dashed curve that stops where it diverged (×).</p>"]
    for fig in page.figures:
        if fig.src is None:
            parts.append(f"<p class=\"note\">{_e(fig.ref)}: not recorded.</p>")
        else:
            parts.append(f"<figure><img src=\"{_e(fig.src)}\" alt=\"learning curve of {_e(fig.ref)}\"></figure>")
    return "\n".join(parts)


def _final_table(page: Page) -> str:
    header, rows = tables.table_rows(page.agg, page.refs)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for label, cells in zip(page.agg["label"], rows):
        tds = [f"<td>{_swatch(page.colours, label)}{_e(cells[0])}</td>"]
        tds += [f"<td class=\"num\">{_e(c)}</td>" for c in cells[1:-2]]
        tds += [f"<td class=\"num{'' if c == '0' else ' flag'}\">{_e(c)}</td>" for c in cells[-2:]]
        body.append("<tr>" + "".join(tds) + "</tr>")
    missing = ""
    if page.missing_refs:
        missing = f"<p class=\"note\">Not recorded by any run: {', '.join(_e(r) for r in page.missing_refs)}.</p>"
    return (
        "<h2>Final metrics</h2>\n"
        f"<p>{_e(tables.caption(page.rule, page.agg))}</p>\n"
        f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n" + missing
        + "<p class=\"note\">Also as <a href=\"tables/final.csv\">CSV</a> and "
        "<a href=\"tables/final.md\">Markdown</a>.</p>"
    )


def _problems(page: Page) -> str:
    bad = page.runs[page.runs["status"].isin(("diverged", "failed"))]
    if bad.empty:
        return "<h2>Diverged and failed runs</h2>\n<p>None.</p>"
    last_epochs = page.metrics.groupby("run")["epoch"].max() if len(page.metrics) else pd.Series(dtype=int)
    rows = []
    for _, run in bad.iterrows():
        error = run.get("error")
        error = error if isinstance(error, str) and error.strip() else None
        if error is not None:
            what = _e(_last_line(error))
            detail = f"<details><summary>traceback</summary><pre>{_e(error)}</pre></details>"
        elif run["status"] == "diverged" and run["run"] in last_epochs:
            what, detail = f"non-finite values at epoch {int(last_epochs[run['run']])}", ""
        else:
            what, detail = "no error recorded", ""
        rows.append(
            f"<tr><td>{_swatch(page.colours, run['label'])}{_e(run['label'])}</td>"
            f"<td class=\"num\">{_e(run['replicate'])}</td><td><code>{_e(run['run'])}</code></td>"
            f"<td class=\"flag\">{_e(run['status'])}</td><td>{what}{detail}</td></tr>"
        )
    return (
        "<h2>Diverged and failed runs</h2>\n<table><tr><th>variant</th><th>replicate</th><th>run</th>"
        "<th>status</th><th>error</th></tr>\n" + "\n".join(rows) + "\n</table>"
    )


def _spec(page: Page) -> str:
    spec = page.study.get("spec") or {}
    try:
        text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except yaml.YAMLError:
        text = json.dumps(spec, indent=2, default=str)
    return f"<h2>Study spec (resolved)</h2>\n<pre>{_e(text)}</pre>"


def _axes_text(axes: Any) -> str:
    if not isinstance(axes, dict) or not axes:
        return ""
    return "; ".join(f"{_e(path)} = {_e(_scalar(value))}" for path, value in axes.items())


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _swatch(colours: dict[str, str], label: str) -> str:
    colour = colours.get(label)
    return f"<span class=\"swatch\" style=\"background:{_e(colour)}\"></span>" if colour else ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)

