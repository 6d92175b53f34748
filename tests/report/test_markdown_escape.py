"""tables/final.md shows labels literally: no HTML tag, emphasis, link or extra column reaches a renderer."""

import html
import re

import pandas as pd

from ablab.report.tables import escape_markdown, to_markdown

HOSTILE = ['<img src=x onerror=alert(1)>', "a|b", "*bold* _it_ `code` [l](http://x) ~~s~~", "back\\slash & co"]


def _unescape(text: str) -> str:
    """What a CommonMark renderer shows for escaped text: backslash escapes dropped, entities decoded."""
    return html.unescape(re.sub(r"\\(.)", r"\1", text))


def test_escaped_text_reads_back_as_the_original():
    for label in HOSTILE:
        out = escape_markdown(label)
        assert _unescape(out) == label
        assert "<" not in out and ">" not in out
        assert not re.search(r"(?<!\\)[|*_`\[\]~]", out)  # every significant character is escaped


def test_final_markdown_table_has_no_raw_html_and_one_cell_per_column():
    agg = pd.DataFrame({"label": HOSTILE, "n": 2, "n_diverged": 0, "n_failed": 0,
                        "test.accuracy.mean": 0.5, "test.accuracy.sd": 0.1, "test.accuracy.n": 2})
    md = to_markdown(agg, ["test.accuracy"], "final epoch")
    assert "<img" not in md and "<" not in md
    rows = md.strip().splitlines()[-len(HOSTILE):]
    for label, row in zip(HOSTILE, rows):
        cells = re.split(r"(?<!\\)\|", row)[1:-1]  # a table cell ends at an unescaped |
        assert len(cells) == 5, row
        assert _unescape(cells[0].strip()) == label
        assert cells[1].strip() == "0.500 ± 0.100"  # SE 0.1/√2 = 0.071: three decimals
