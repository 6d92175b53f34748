"""The report page: one self-contained HTML file with inline CSS, no script, figures as PNG beside it.

Every string that comes from a spec or the store goes through ``e`` (``html.escape`` with
quotes) before it reaches the page; the page also forbids scripts through its CSP. Tables scroll
sideways inside their own box (``overflow-x``) so a wide one never widens the page; figures
(``figure_html``) shrink to the page and link to their full-size PNG.
"""

from __future__ import annotations

import html
from typing import Any, Iterable

from ablab.report.context import PagePart

_CSP = "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'"

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; display: block; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: -0.1em; }
.flag { color: #b00020; font-weight: 600; }
.note { color: #555; } figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; }
figure a { display: block; } dd { margin: 0; overflow-wrap: anywhere; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 13px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dt { color: #555; }
"""


def render_page(title: str, parts: Iterable[PagePart]) -> str:
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


def figure_html(name: str, alt: str, caption: str = "") -> str:
    """A figure from ``figures/`` as wide as the page allows, linked to its full-size PNG; ``caption`` is HTML."""
    src = f"figures/{e(name)}"
    caption = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure><a href=\"{src}\" title=\"full size\"><img src=\"{src}\" alt=\"{e(alt)}\"></a>{caption}</figure>"


def swatch(colours: dict[str, str], label: str) -> str:
    """A small square in the variant's colour, as in the figures; nothing for an unknown variant."""
    colour = colours.get(label)
    return f"<span class=\"swatch\" style=\"background:{e(colour)}\"></span>" if colour else ""
