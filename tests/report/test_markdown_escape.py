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


def _hostile_grid_frames():
    """The made-up grid with its optimizer names replaced by hostile labels (one per optimizer)."""
    from gridframes import make_frames

    per_run, runs = make_frames()
    names = {"sgd": HOSTILE[0], "adam": HOSTILE[2]}
    runs["axes"] = [{**a, "optimizer.name": names[a["optimizer.name"]]} for a in runs["axes"]]
    runs["label"] = [f"{a['optimizer.name']}, {lbl}" for a, lbl in zip(runs["axes"], runs["label"])]
    return per_run, runs


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_grid_and_best_markdown_have_no_raw_html_and_show_labels_literally():
    from ablab.analysis.grids import best_configurations, grid_table
    from ablab.report.grid_tables import best_to_markdown, grid_to_markdown

    per_run, runs = _hostile_grid_frames()
    grids = "\n".join(grid_to_markdown(t) for t in grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay",
                                                                "test.loss"))
    best = best_to_markdown(best_configurations(per_run, runs, "test.loss", k=4))
    for md in (grids, best):
        assert "<img" not in md and "<" not in md and ">" not in md
        rows = [r for r in md.splitlines() if r.startswith("|")]
        assert len({len(_cells(r)) for r in rows}) == 1  # no label adds a column
    titles = [line for line in grids.splitlines() if line.startswith("**")]
    assert any(f"optimizer.name = {HOSTILE[0]}," in _unescape(t) for t in titles)
    assert any(_unescape(c).startswith(HOSTILE[2]) for r in best.splitlines() if r.startswith("|") for c in _cells(r))
    # the best cell stays bold: exactly one **…** per facet table, around a mean ± SD
    assert len(re.findall(r"\*\*\d\.\d+ ± \d\.\d+\*\*", grids)) == grids.count("\n**") + 1
