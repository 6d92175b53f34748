"""The grid section of the report: heatmap tables, best cell, p-values, sharpness, budgets, escaping."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablab.report import write_report
from ablab.report.numbers import format_mean_sd, format_value
from ablab.spec import make_label
from fakestore import FakeStore

EVIL = '<script>alert(1)</script><img src=x onerror="window.__pwned=1">'
LRS, WDS = [0.1, 0.01], [0.0, 0.001]




def _loss(opt: str, lr: float, wd: float, sam: bool, rep: int) -> float:
    """Best: adam, lr 0.01, wd 0.001, no SAM; replicates spread by ±0.05."""
    return 1.0 + (0.5 if opt != "adam" else 0) + (0.3 if lr == 0.1 else 0) - (0.1 if wd else 0) \
        + (0.2 if sam else 0) + 0.05 * (rep - 1) * (1 + lr)


def make_store(tmp_path: Path, report: dict, optimizers=("sgd", "adam"), sharpness: bool = True) -> FakeStore:
    runs, rows = [], []
    for opt in optimizers:
        for lr in LRS:
            for wd in WDS:
                for sam in (None, {"rho": 0.05}):
                    axes = {"optimizer.name": opt, "optimizer.lr": lr, "optimizer.weight_decay": wd, "sam": sam}
                    for rep in range(3):
                        run = f"r{len(runs)}"
                        spec = {"optimizer": {"name": opt, "lr": lr, "weight_decay": wd}, "sam": sam}
                        runs.append({"run": run, "label": make_label(axes), "replicate": rep, "status": "done",
                                     "axes": axes, "spec": spec, "error": None, "duration_s": 1.0,
                                     "device": "cpu", "code_version": "0.1.0+abc",
                                     "info": {"epochs": 10 if sam else 20, "steps": 50 if sam else 100,
                                              "gradient_evaluations": 100}})
                        loss = _loss(opt, lr, wd, bool(sam), rep)
                        for epoch, value in ((0, 2.0), (10, loss)):
                            rows += [(run, epoch * 5, epoch, "test", "loss", value),
                                     (run, epoch * 5, epoch, "train", "loss", value - 0.1)]
                        if sharpness:
                            rows += [(run, 50, 10, "train", "sam_sharpness", 0.01 * (1 + rep) + (0.0 if sam else 0.02)),
                                     (run, 50, 10, "train", "hessian_top_eigenvalue", 3.0 + rep + (0 if sam else 2))]
    study = {"name": "grid", "file": "grid.yaml", "description": "", "code_version": "0.1.0+abc",
             "spec": {"grid": {"optimizer.name": list(optimizers), "optimizer.lr": LRS,
                               "optimizer.weight_decay": WDS, "sam": [None, {"rho": 0.05}]}},
             "report": {"selection": "final", "select_on": "val.accuracy", "metrics": ["test.loss"],
                        "curves": ["test.loss"], **report}}
    metrics = pd.DataFrame(rows, columns=["run", "step", "epoch", "split", "name", "value"])
    return FakeStore(tmp_path / "study", study, pd.DataFrame(runs), metrics)


GRID = {"grids": [{"rows": "optimizer.lr", "cols": "optimizer.weight_decay", "metric": "test.loss",
                   "facets": ["optimizer.name", "sam"]}],
        "best": {"metric": "test.loss", "k": 3, "baseline": {"optimizer.name": "sgd", "sam": None}}}


class _Cells(HTMLParser):
    """Every grid table: its caption, and per cell (row header, column index, classes, title, text)."""

    def __init__(self):
        super().__init__()
        self.tables, self._in, self._cell, self._row, self._col, self._caption = [], False, None, None, 0, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("class") == "grid":
            self.tables.append({"caption": "", "cells": []})
            self._in = True
        elif self._in and tag == "caption":
            self._caption = True
        elif self._in and tag == "tr":
            self._row, self._col = None, 0
        elif self._in and tag == "th" and self._row is None:
            self._row = ""
        elif self._in and tag == "td":
            self._cell = {"row": self._row, "col": self._col, "class": a.get("class", ""),
                          "title": a.get("title", ""), "style": a.get("style", ""), "text": ""}
            self._col += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif tag == "caption":
            self._caption = False
        elif tag == "td" and self._cell is not None:
            self.tables[-1]["cells"].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._caption:
            self.tables[-1]["caption"] += data
        elif self._cell is not None:
            self._cell["text"] += data
        elif self._in and self._row == "":
            self._row = data


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory):
    """The report of the fake grid study with ``GRID``'s settings, rendered once for the tests that read it."""
    return write_report(make_store(tmp_path_factory.mktemp("grid"), GRID))


def test_heatmap_tables_one_per_facet_with_the_best_cell_marked(grid_report):
    result = grid_report
    page = result.path.read_text()
    headings = [part.split("</h2>", 1)[0] for part in page.split("<h2>")[1:]]
    assert headings == ["Variants", "Learning curves", "Final metrics", "Hyperparameter grids",
                        "Best configurations by test.loss", "Sharpness at the end of training", "Compute budget",
                        "Diverged and failed runs", "Study spec (resolved)"]
    parser = _Cells()
    parser.feed(page)
    assert [t["caption"] for t in parser.tables] == [
        "optimizer.name = sgd, sam = none", "optimizer.name = sgd, sam = rho=0.05",
        "optimizer.name = adam, sam = none", "optimizer.name = adam, sam = rho=0.05"]
    for table in parser.tables:
        best = [c for c in table["cells"] if "best" in c["class"].split()]
        assert len(best) == 1 and (best[0]["row"], best[0]["col"]) == ("0.01", 1)  # lr 0.01, wd 0.001
        assert all("background:#" in c["style"] for c in table["cells"])
    adam = parser.tables[2]["cells"]
    cell = next(c for c in adam if (c["row"], c["col"]) == ("0.01", 1))
    values = [_loss("adam", 0.01, 0.001, False, r) for r in range(3)]
    mean, sd = np.mean(values), np.std(values, ddof=1)
    se = sd / np.sqrt(3)
    assert cell["text"].startswith(format_value(mean, se))  # rounded by the cell's standard error
    assert abs(float(cell["text"].split()[0]) - mean) <= se / 20
    assert cell["title"] == f"{format_mean_sd(mean, sd, 3)}, n=3"
    # the same numbers in the SD companion table, and the table files beside the page
    assert f"{format_value(sd, se)} (n=3)" in page
    names = {p.name for p in result.tables}
    assert {"grid_0.csv", "grid_0.md", "grid_0.tex", "best.csv", "best.md", "best.tex"} <= names
    assert all(p.is_file() for p in result.tables)


def test_best_configurations_show_p_values_and_the_baseline(grid_report):
    page = grid_report.path.read_text()
    assert "<h2>Best configurations by test.loss</h2>" in page  # a section of its own
    assert page.count('class="p-value"') == 2  # vs runner-up and vs the SGD baseline
    assert page.count("Holm over these 2 tests") == 2 and page.count("n = 3 vs 3") >= 2
    assert '<tr class="baseline">' in page  # the baseline row is added below the top 3
    assert "Welch t = " in page


def test_sharpness_figure_and_budget_table(grid_report):
    result = grid_report
    page = result.path.read_text()
    figure = result.path.parent / "figures" / "sharpness.png"
    assert figure in result.figures and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<img src="figures/sharpness.png"' in page
    assert "Compute budget per variant (16 variants)" in page
    budget = page[page.index('<table class="budget">'):]
    assert "<td class=\"num\">10</td><td class=\"num\">50</td><td class=\"num\">100</td>" in budget


def test_labels_from_the_store_are_escaped(tmp_path):
    store = make_store(tmp_path, GRID, optimizers=("sgd", EVIL))
    page = write_report(store).path.read_text()
    assert "<script>" not in page and "<img src=x" not in page
    assert html.escape(f"optimizer.name = {EVIL}", quote=True) in page


def test_no_grid_settings_and_no_sharpness_leave_the_report_as_it_was(tmp_path):
    page = write_report(make_store(tmp_path, {}, sharpness=False)).path.read_text()
    assert "Hyperparameter grids" not in page and "table.grid" not in page


def test_sharpness_alone_shows_the_plot(tmp_path):
    result = write_report(make_store(tmp_path, {}))
    page = result.path.read_text()
    assert "Sharpness at the end of training" in page and '<table class="grid">' not in page


def test_a_grid_axis_the_runs_do_not_vary_is_a_message_in_the_report_not_a_crash(tmp_path):
    """An axis of the study that no run records (one value): the grid says so, the page still renders."""
    store = make_store(tmp_path, {})
    store._study["spec"]["grid"]["batch_size"] = [64]
    store._study["spec"]["report"]["grids"] = [{"rows": "optimizer.lr", "cols": "batch_size"}]
    page = write_report(store).path.read_text()
    assert "report.grids.0.cols: &#x27;batch_size&#x27; is not a varied axis" in page
