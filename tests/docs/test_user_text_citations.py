"""User-facing text cites the thesis by chapter, section, equation or table: never our notes' line numbers
(``L517``), ``seed002.md`` or RST markup. ``ablab list`` descriptions: tests/test_registry.py; here the
report's text (every string the report modules and the CLI build, docstrings aside), the CLI help, the
docs, the README and the shipped study files (issue 21)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "ablab"
NOTES = re.compile(r"\bL\d{3,}\b|\(L\d+|seed00\d\.md")
MARKUP = re.compile(r"``")


def _text_strings(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module that is not a docstring (f-string parts included), with its line."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


TEXT_MODULES = sorted([*(SRC / "report").rglob("*.py"), SRC / "cli.py", SRC / "cli_inspect.py"])


@pytest.mark.parametrize("path", TEXT_MODULES, ids=[str(p.relative_to(SRC)) for p in TEXT_MODULES])
def test_report_and_cli_text_cites_no_notes_and_has_no_markup(path):
    bad = [(line, s) for line, s in _text_strings(path) if NOTES.search(s) or MARKUP.search(s)]
    assert not bad, bad


def test_the_scan_finds_a_line_number_in_report_text(tmp_path):
    """The scan itself: a note's line number in a report string is found, the same in a docstring is not."""
    module = tmp_path / "m.py"
    module.write_text('"""Module (L517)."""\n\n\ndef f():\n    """Doc ``x`` (L1)."""\n    return f"<p>claim (L517): {1}</p>"\n')
    assert [line for line, s in _text_strings(module) if NOTES.search(s)] == [6]


def _help_texts() -> list[str]:
    from ablab.cli import _parser

    texts, parsers = [], [_parser()]
    while parsers:
        p = parsers.pop()
        texts += [p.description or ""]
        for action in p._actions:
            texts.append(action.help or "")
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                parsers += list(action.choices.values())
                texts += [a.help or "" for a in getattr(action, "_choices_actions", [])]
    return texts


def test_cli_help_cites_no_notes_and_has_no_markup():
    texts = _help_texts()
    assert len(texts) > 40  # every subcommand's options were reached
    bad = [t for t in texts if NOTES.search(t) or MARKUP.search(t)]
    assert not bad, bad


PAGES = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md", *(ROOT / "studies").rglob("*.yaml")])


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_docs_and_shipped_studies_cite_the_thesis_not_our_notes(path):
    bad = [line for line in path.read_text().splitlines() if NOTES.search(line)]
    assert not bad, bad
