"""The report page: one self-contained HTML file with inline CSS, no script, figures as PNG beside it.

Every string that comes from a spec or the store goes through ``e`` (``html.escape`` with
quotes) before it reaches the page; the page also forbids scripts through its CSP.
"""

from __future__ import annotations

import html
from typing import Any, Iterable

from ablab.report.context import Part

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


def render_page(title: str, parts: Iterable[Part]) -> str:
    """The whole report: the parts' HTML in order, their CSS after the page's own."""
    parts = list(parts)
    css = _CSS + "".join(dict.fromkeys(p.css for p in parts if p.css))  # a section's CSS once
    body = "\n".join(p.html for p in parts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n"
        f"<title>{e(title)} — ablab report</title>\n<style>{css}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def e(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def swatch(colours: dict[str, str], label: str) -> str:
    """A small square in the variant's colour, as in the figures; nothing for an unknown variant."""
    colour = colours.get(label)
    return f"<span class=\"swatch\" style=\"background:{e(colour)}\"></span>" if colour else ""
