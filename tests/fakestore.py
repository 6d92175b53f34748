"""A stand-in for ``ablab.store.Store`` built from frames: what the report reads, nothing more."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd


class FakeStore:
    """The duck-typed store the report reads: path, study(), runs(), metrics(); artifacts under runs/<id>/."""

    def __init__(self, path: Path, study: dict, runs: pd.DataFrame, metrics: pd.DataFrame):
        self.path, self._study, self._runs, self._metrics = path, study, runs, metrics

    def study(self) -> dict:
        return self._study

    def runs(self) -> pd.DataFrame:
        return self._runs.copy()

    def metrics(self) -> pd.DataFrame:
        return self._metrics.copy()

    def artifact_path(self, run: str, name: str) -> Path:
        return self.path / "runs" / run / name


class _Tags(HTMLParser):
    """Start tags with their attributes, and the text, of an HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse_html(page: str) -> _Tags:
    """The parsed page: ``.tags`` and ``.text``."""
    parser = _Tags()
    parser.feed(page)
    return parser
