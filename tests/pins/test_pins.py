"""No behaviour change: the shipped specs' run ids, and what three small studies store and report, as recorded.

The golden files were written by ``pinning.py --write`` before the house was reshaped (issue "The house").
"""

from __future__ import annotations

import json

import pytest

import pinning

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def pinned_dirs(tmp_path_factory):
    return pinning.train_pins(tmp_path_factory.mktemp("pins"))


def test_shipped_specs_expand_to_the_recorded_run_ids():
    golden = json.loads((pinning.GOLDEN / "run_ids.json").read_text())
    got = pinning.run_ids()
    assert sorted(got) == sorted(golden), "shipped specs were added or removed: rewrite the pins"
    for name, expected in golden.items():
        assert got[name] == expected, name


def _values(rows):
    return {tuple(r[:5]): r[5] for r in rows}


@pytest.mark.parametrize("study", pinning.STUDIES)
def test_pin_study_stores_the_recorded_runs_metrics_and_artifacts(pinned_dirs, study):
    golden = json.loads((pinning.GOLDEN / study / "stored.json").read_text())
    got = pinning.stored(pinned_dirs[study])
    assert got["runs"] == golden["runs"]
    expected, values = _values(golden["metrics"]), _values(got["metrics"])
    assert sorted(values) == sorted(expected)  # the same (run, step, epoch, split, name) rows
    for key, v in expected.items():
        assert float(values[key]) == pytest.approx(float(v), rel=1e-4, abs=1e-6), key
    if values == expected:  # this machine reproduces the recorded bits: so do the prediction and probe files
        assert got["artifacts"] == golden["artifacts"]
    else:
        assert [a[:3] for a in got["artifacts"]] == [a[:3] for a in golden["artifacts"]]


@pytest.mark.parametrize("study", pinning.STUDIES)
def test_pin_study_report_tables_are_the_recorded_ones(pinned_dirs, study):
    golden = {p.name: p.read_text(encoding="utf-8") for p in sorted((pinning.GOLDEN / study / "tables").iterdir())}
    got = pinning.tables(pinned_dirs[study])
    assert sorted(got) == sorted(golden)
    exact = _values(pinning.stored(pinned_dirs[study])["metrics"]) == _values(
        json.loads((pinning.GOLDEN / study / "stored.json").read_text())["metrics"])
    for name, text in golden.items():
        if exact:
            assert got[name] == text, name
        else:
            assert pinning.same_to_printed_digit(text, got[name]), name


def test_same_to_printed_digit_tells_a_changed_number():
    assert pinning.same_to_printed_digit("a,0.951,1e-3\n", "a,0.952,1e-3\n")
    assert not pinning.same_to_printed_digit("a,0.951\n", "a,0.954\n")
    assert not pinning.same_to_printed_digit("a,0.951\n", "b,0.951\n")
