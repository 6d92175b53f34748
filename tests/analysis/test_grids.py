"""Grids → frames: pivots of known means, best cells, Welch tests, baseline choice, axis labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ablab.analysis.grids import axis_label, best_configurations, grid_table, welch_test
from ablab.errors import SpecError
from ablab.labels import label_value
from ablab.spec import make_label
from gridframes import LRS, WDS, known_value, make_frames


def test_pivot_holds_the_mean_sd_and_n_over_repeats():
    per_run, runs = make_frames()
    tables = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")
    assert [t.facet for t in tables] == [
        {"optimizer.name": o, "sam": s} for o in ("sgd", "adam") for s in ("none", "rho=0.05")
    ]
    adam = tables[2]
    assert list(adam.mean.index) == ["0.1", "0.01", "0.001"] and list(adam.mean.columns) == ["0", "0.0001"]
    for lr in LRS:
        for wd in WDS:
            values = [known_value("adam", lr, wd, None, r) for r in range(3)]
            cell = (axis_label(lr), axis_label(wd))
            assert adam.mean.loc[cell] == pytest.approx(np.mean(values))
            assert adam.sd.loc[cell] == pytest.approx(np.std(values, ddof=1))
            assert adam.n.loc[cell] == 3 and adam.n_bad.loc[cell] == 0
    assert "optimizer.name = adam" in adam.title and "sam = none" in adam.title


def test_best_cell_is_the_min_for_loss_and_the_max_for_accuracy():
    per_run, runs = make_frames()
    loss = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")
    acc = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.accuracy")
    assert all(t.best == ("0.01", "0.0001") for t in loss + acc)
    assert not loss[0].higher_is_better and acc[0].higher_is_better
    # the best cell moves when a cell gets better
    per_run.loc[per_run["run"].str.startswith("sgd-0.1-0.0-False"), "test.loss"] = 0.0
    assert grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")[0].best == ("0.1", "0")


def test_diverged_runs_are_counted_not_averaged():
    per_run, runs = make_frames(diverge=("adam", 0.1, 0.0, False, 1))
    adam = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")[2]
    values = [known_value("adam", 0.1, 0.0, None, r) for r in (0, 2)]
    assert adam.n.loc["0.1", "0"] == 2 and adam.n_bad.loc["0.1", "0"] == 1
    assert adam.mean.loc["0.1", "0"] == pytest.approx(np.mean(values))


def test_explicit_facets_pool_the_other_axes_and_bad_axes_are_named():
    per_run, runs = make_frames()
    tables = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss", facets=["optimizer.name"])
    assert len(tables) == 2 and tables[1].n.loc["0.01", "0"] == 6  # both SAM settings pooled
    with pytest.raises(SpecError, match="'wd' is not a varied axis.*optimizer.weight_decay"):
        grid_table(per_run, runs, "optimizer.lr", "wd", "test.loss")
    with pytest.raises(SpecError, match="'test.mse' was not recorded"):
        grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.mse")


def test_best_configurations_rank_and_welch_p_values_equal_scipys():
    per_run, runs = make_frames()
    best = best_configurations(per_run, runs, "test.loss", k=3)
    top = best.table
    assert len(top) == 3 and list(top["rank"]) == [1, 2, 3]
    assert list(top["mean"]) == sorted(top["mean"])
    assert top.loc[0, "optimizer.name"] == "adam" and top.loc[0, "optimizer.lr"] == "0.01"
    assert top.loc[0, "optimizer.weight_decay"] == "0.0001" and top.loc[0, "sam"] == "none"
    a = per_run.loc[per_run["label"] == top.loc[0, "label"], "test.loss"].to_numpy()
    b = per_run.loc[per_run["label"] == top.loc[1, "label"], "test.loss"].to_numpy()
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert best.runner_up.against == top.loc[1, "label"]
    assert best.runner_up.p == pytest.approx(expected.pvalue, rel=1e-12)
    assert best.runner_up.t == pytest.approx(expected.statistic, rel=1e-12)
    assert best.runner_up.delta == pytest.approx(a.mean() - b.mean())
    wide = per_run.loc[per_run["run"].str.startswith("sgd-0.1-0.0-False"), "test.loss"].to_numpy()
    assert welch_test(a, wide)[1] == pytest.approx(stats.ttest_ind(a, wide, equal_var=False).pvalue, rel=1e-12)
    assert welch_test(a, wide)[1] != pytest.approx(stats.ttest_ind(a, wide).pvalue, rel=1e-3)  # not Student's
    # accuracy-like metrics rank the other way round
    assert best_configurations(per_run, runs, "test.accuracy", k=1).table.loc[0, "label"] == top.loc[0, "label"]


def test_baseline_is_the_best_variant_matching_axes_and_spec_paths():
    per_run, runs = make_frames()
    sam_best = {"sam": {"rho": 0.05}}
    best = best_configurations(per_run, runs, "test.loss", baseline=sam_best)
    want = make_label({"optimizer.name": "adam", "optimizer.lr": 0.01, "optimizer.weight_decay": 1e-4,
                       "sam": {"rho": 0.05}})
    assert best.baseline_label == want and best.baseline.against == want
    a = per_run.loc[per_run["label"] == best.table.loc[0, "label"], "test.loss"]
    b = per_run.loc[per_run["label"] == want, "test.loss"]
    assert best.baseline.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    # a path that is not an axis is looked up in the resolved spec; 0 equals 0.0
    plain = best_configurations(per_run, runs, "test.loss", baseline={"optimizer.name": "sgd", "weight_decay.value": 0})
    assert plain.baseline_label.startswith("optimizer=sgd, optimizer.lr=0.01, optimizer.weight_decay=0.0001, sam=none")
    # the best variant is the baseline: tested against the best variant that does not match
    itself = best_configurations(per_run, runs, "test.loss", baseline={"sam": None})
    assert itself.best_is_baseline and itself.baseline_label == best.table.loc[0, "label"]
    assert itself.baseline.against == want  # the best run with SAM
    assert any("does not" in n for n in itself.note)
    nothing = best_configurations(per_run, runs, "test.loss", baseline={"sam": {"rho": 0.5}})
    assert nothing.baseline_label is None and any("matches the baseline" in n for n in nothing.note)


def test_welch_needs_two_values_a_side():
    t, p = welch_test(np.array([1.0]), np.array([2.0, 3.0]))
    assert np.isnan(t) and np.isnan(p)


def test_axis_labels_are_readable():
    assert axis_label(None) == "none" and axis_label({"rho": 0.05}) == "rho=0.05"
    assert axis_label(3e-5) == "3e-05" and axis_label({"name": "sgd", "lr": 0.1}) == "sgd(lr=0.1)"


@pytest.mark.parametrize("value, spelled", [
    (None, "none"), (3e-5, "3e-05"), (0.1, "0.1"), (1, "1"), (True, "True"), ("adam", "adam"),
    ([1, 0.5], "[1, 0.5]"), ({"rho": 0.05}, "(rho=0.05)"),
    ({"name": "sgd", "lr": 0.1, "nested": {"a": None}}, "sgd(lr=0.1, nested=(a=none))"), ({"name": "relu"}, "relu"),
])
def test_axis_values_are_spelled_as_in_run_labels(value, spelled):
    """One spelling, written out here: ``ablab.labels`` (which the report imports) and the run labels of ``ablab.spec``."""
    assert label_value(value) == spelled
    assert make_label({"axis": value}) == f"axis={spelled}"
