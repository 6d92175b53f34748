"""Literal text in Markdown files (tables/final.md, grid_N.md, best.md): one escape for all of them."""

from __future__ import annotations

# HTML's & < > as entities, so no tag from a label reaches a renderer (Markdown passes raw HTML
# through, unlike the HTML report's html.escape); emphasis, code, link and table characters
# backslash-escaped (CommonMark §2.4: any ASCII punctuation may be backslash-escaped)
_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", **{c: "\\" + c for c in "\\`*_[]~|"}}


def escape_markdown(text: object) -> str:
    """``text`` as literal Markdown: ``& < >`` as entities, ``\\ ` * _ [ ] ~ |`` backslash-escaped,
    line breaks as spaces (a table row is one line)."""
    return "".join(_MD_ESCAPES.get(c, c) for c in " ".join(str(text).splitlines()))


def markdown_row(cells: list[str]) -> str:
    """One table row, every cell escaped."""
    return "| " + " | ".join(map(escape_markdown, cells)) + " |"
