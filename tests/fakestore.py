"""A stand-in for ``ablab.store.Store`` built from frames (what the report reads), and readers of its output."""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from ablab.spec import Study


class FakeStore:
    """The duck-typed store the report reads: path, study(), runs(), metrics(); artifacts under runs/<id>/."""

    def __init__(self, path: Path, study: dict, runs: pd.DataFrame, metrics: pd.DataFrame):
        self.path, self._study, self._runs, self._metrics = path, study_row(study), runs, metrics

    def study(self) -> dict:
        return self._study

    def runs(self) -> pd.DataFrame:
        return self._runs.copy()

    def metrics(self) -> pd.DataFrame:
        return self._metrics.copy()

    def artifact_path(self, run: str, name: str) -> Path:
        return self.path / "runs" / run / name


def study_row(short: dict) -> dict:
    """The study row a real store holds, from a test's short one: its ``spec`` completed to a valid ``Study``
    (a digits base run unless given; the row's ``description`` and ``report`` as the spec's), dumped as stored."""
    spec = {"name": "study", "base": {"data": "digits"}, "description": short.get("description", ""),
            "report": short.get("report", {}), **short.get("spec", {})}
    study = Study.model_validate(spec)
    return {"name": study.name, "file": short.get("file", ""), "description": study.description,
            "spec": study.model_dump(mode="json"), "report": study.report.model_dump(mode="json"),
            "code_version": short.get("code_version", "")}


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


def read_csv_exact(source: str | Path) -> pd.DataFrame:
    """``pd.read_csv`` of a path or CSV text, with every float column parsed by Python's ``float``.

    Python's ``float`` is correctly rounded; pandas < 3's default C parser can be 1 ulp off
    (pandas-dev/pandas#17154), which would hide whether the file itself holds the exact numbers.
    """
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    frame = pd.read_csv(io.StringIO(text))
    raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    for column in frame.columns[frame.dtypes == np.float64]:
        frame[column] = [float(v) if v else np.nan for v in raw[column]]
    return frame
