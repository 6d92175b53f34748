"""The page is made of registered sections: their order, how a new one plugs in, the files they leave.

Also: the report of a real stored study (spec → CLI → store → report) shows what its probes stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ablab.registry import REPORT_SECTIONS
from ablab.report import write_report
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.html import e
from ablab.report.sections import PAGE_ORDER, load_sections
from ablab.files import write_atomic
from conftest import TINY_BASE
from fakestore import FakeStore, parse_html, read_csv_exact

def _store(path: Path) -> FakeStore:
    """Two variants × one seed, test.loss at two epochs; no grids, probes or plan info."""
    runs = pd.DataFrame([("r0", "a", 0, "done", {"x": 1}), ("r1", "b", 0, "done", {"x": 2})],
                        columns=["run", "label", "replicate", "status", "axes"])
    metrics = pd.DataFrame([(r, 10 * ep, ep, "test", "loss", 1.0 / (ep + 1 + i)) for i, r in enumerate(["r0", "r1"])
                            for ep in (0, 1)], columns=["run", "step", "epoch", "split", "name", "value"])
    study = {"name": "s", "file": "s.yaml", "spec": {"grid": {"x": [1, 2]}}, "report": {"selection": "final"}}
    return FakeStore(path, study, runs, metrics)


def _headings(page: str) -> list[str]:
    """The text of every <h2>, in page order."""
    return [part.split("</h2>", 1)[0] for part in page.split("<h2>")[1:]]


def test_sections_are_registered_in_one_fixed_order_with_their_own_descriptions():
    sections = load_sections()
    names = [type(s).__module__.rsplit(".", 1)[-1] for s in sections]
    assert sorted(REPORT_SECTIONS.list_names()) == sorted(PAGE_ORDER)  # every built-in section is placed
    assert len(set(PAGE_ORDER)) == len(PAGE_ORDER)
    assert [REPORT_SECTIONS.get(n) for n in PAGE_ORDER] == [type(s) for s in sections]
    assert names == list(PAGE_ORDER)  # one module per section, named as the section
    base = ReportSection.__doc__.splitlines()[0]
    for entry in REPORT_SECTIONS.list_entries():
        assert entry.description and entry.description != base, entry.name


def test_ablab_list_names_every_section(capsys):
    from ablab.cli import main

    assert main(["list", "report_section"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("report_section:")
    for name in PAGE_ORDER:
        assert f"  {name} " in out


def test_the_page_is_the_sections_that_apply_in_order(tmp_path):
    store = _store(tmp_path / "study")
    ctx = ReportContext(store, tmp_path / "study" / "report")
    applying = [s for s in load_sections() if s.applies(ctx)]
    assert [type(s).__module__.rsplit(".", 1)[-1] for s in applying] == [
        "header", "variants", "curves", "final_table", "problems", "spec"]
    page = write_report(store).path.read_text(encoding="utf-8")
    assert _headings(page) == ["Variants", "Learning curves", "Final metrics", "Diverged and failed runs",
                               "Study spec (resolved)"]


class _Extra(ReportSection):
    """A test section: the number of runs per variant as a CSV, while the study has a description."""

    after = "final_table"

    def applies(self, ctx: ReportContext) -> bool:
        return bool(ctx.study.description)

    def render(self, ctx: ReportContext) -> PagePart:
        path = ctx.table_path("extra.csv")
        counts = ctx.runs.groupby("label", sort=False).size().rename("runs").reset_index()
        write_atomic(path, to_csv(counts).encode())
        return PagePart(f"<h2>Extra {e(ctx.study.description)}</h2>", css=".extra { }\n", tables=[path])


class _Last(_Extra):
    """A test section that names no section to follow: the page's end."""

    after = None

    def render(self, ctx: ReportContext) -> PagePart:
        return PagePart("<h2>Last</h2>")


@pytest.fixture
def extra_section(monkeypatch):
    """``_Extra`` registered as ``extra`` (and ``_Last`` as ``last``) for one test; the registry is restored."""
    monkeypatch.setattr(REPORT_SECTIONS, "_entries", dict(REPORT_SECTIONS._entries))
    REPORT_SECTIONS.register("extra")(_Extra)
    REPORT_SECTIONS.register("last")(_Last)


def test_a_new_section_is_one_registered_class_and_its_files_go_when_it_stops_applying(tmp_path, extra_section):
    store = _store(tmp_path / "study")
    store._study["spec"]["description"] = "<b>x</b>"
    mine = tmp_path / "study" / "report" / "tables" / "notes.txt"  # a file of the user's, never listed
    mine.parent.mkdir(parents=True)
    mine.write_text("keep")
    result = write_report(store)
    page = result.path.read_text(encoding="utf-8")
    headings = _headings(page)
    assert headings.index("Extra &lt;b&gt;x&lt;/b&gt;") == headings.index("Final metrics") + 1
    assert headings[-1] == "Last"
    assert ".extra { }" in page
    extra = result.path.parent / "tables" / "extra.csv"
    assert extra in result.tables and read_csv_exact(extra)["runs"].tolist() == [1, 1]
    manifest = json.loads((result.path.parent / "manifest.json").read_text())["files"]
    assert "tables/extra.csv" in manifest and "tables/final.csv" in manifest and "tables/notes.txt" not in manifest

    store._study["spec"]["description"] = ""
    result = write_report(store)
    assert not extra.exists() and extra not in result.tables
    assert "Extra" not in result.path.read_text(encoding="utf-8")
    assert mine.read_text() == "keep" and (result.path.parent / "tables" / "final.csv").is_file()


def test_a_manifest_never_removes_files_outside_the_report(tmp_path):
    store = _store(tmp_path / "study")
    outside = tmp_path / "study" / "ablab.db"
    outside.parent.mkdir(parents=True)
    outside.write_text("results")
    out = tmp_path / "study" / "report"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"files": ["../ablab.db", str(outside), 3]}))
    write_report(store)
    assert outside.read_text() == "results"


# ---- a real stored study ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stored_study(tmp_path_factory) -> Path:
    """A tiny study with both probes, run through the CLI into a real store."""
    from ablab.cli import main

    root = tmp_path_factory.mktemp("stored")
    study = {"name": "probed", "seeds": {"replicates": 2}, "grid": {"model.norm": ["none", "batchnorm"]},
             "base": {**TINY_BASE, "epochs": 1, "record": {"every_steps": 5, "probes": [
                 {"name": "norm_params", "every_steps": 2}, {"name": "relu_sparsity", "every_steps": 2}]}}}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(root / "study.yaml"), "--out", str(root / "results"), "--threads", "1"]) == 0
    return root / "results"


def test_the_report_of_a_stored_study_shows_its_probes_and_plans(stored_study):
    """(That the report imports no training code is an import rule: tests/test_layers.py.)"""
    from ablab.report import write_report
    from ablab.store import Store

    store = Store.open(stored_study)
    try:
        page = write_report(store).path
    finally:
        store.close()
    text = "".join(parse_html(page.read_text(encoding="utf-8")).text)
    # the probes' artifacts were found and decoded: both sections are on the page
    assert "Normalization layers: γ and β" in text and "ReLU sparsity" in text
    assert "Compute budget per variant (2 variants)" in text  # the runs' plans, from the store


def test_default_curves_and_metrics_are_the_recorded_ones(tmp_path):
    """Issue 21: a study that leaves report.curves and report.metrics at their defaults and records only
    test.loss gets its curve and its column, and no "train.loss: not recorded." for the defaults it lacks."""
    from ablab.report.context import ReportContext
    from ablab.report.sections.curves import curve_refs

    store = _store(tmp_path / "study")
    ctx = ReportContext(store, tmp_path / "study" / "report")
    assert curve_refs(ctx) == ["test.loss"] and ctx.refs == ["test.loss"] and ctx.missing_refs == []
    page = write_report(store).path.read_text()
    assert "not recorded" not in page.lower() and "Not recorded by any run" not in page
    assert page.count("<img") == 1 and "learning curve of test.loss" in page
    written = FakeStore(tmp_path / "w", {"name": "s", "spec": {"grid": {"x": [1, 2]}},
                                         "report": {"curves": ["test.loss", "val.accuracy"]}},
                        store.runs(), store.metrics())
    assert "val.accuracy: not recorded." in write_report(written).path.read_text()  # as written: named


def test_one_thread_is_singular(tmp_path):
    """Issue 21: ``1 thread``, not ``1 threads``: the training loop's device string, and stores written before."""
    from ablab.labels import plural

    assert [plural(n, "thread") for n in (1, 2, 0)] == ["1 thread", "2 threads", "0 threads"]
    store = _store(tmp_path / "study")
    runs = store.runs().assign(device=["cpu (1 threads)", "cpu (12 threads)"])
    page = write_report(FakeStore(tmp_path / "s2", {"name": "s", "spec": {"grid": {"x": [1, 2]}}}, runs,
                                  store.metrics())).path.read_text()
    assert "cpu (1 thread)" in page and "1 threads" not in page and "cpu (12 threads)" in page
