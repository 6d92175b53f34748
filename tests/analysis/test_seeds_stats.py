"""Statistics over seeds on hand-made frames whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablab.analysis import aggregate, curves, describe_selection, higher_is_better, run_curves, select_final
from ablab.errors import SpecError

STEPS_PER_EPOCH = 10


def make_runs(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run", "label", "replicate", "status"])


def make_metrics(series: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """``{run: {"val.accuracy": [epoch0, epoch1, ...]}}`` -> the store's long metrics frame."""
    rows = []
    for run, by_ref in series.items():
        for ref, values in by_ref.items():
            split, name = ref.split(".")
            for epoch, value in enumerate(values):
                rows.append((run, epoch * STEPS_PER_EPOCH, epoch, split, name, float(value)))
    return pd.DataFrame(rows, columns=["run", "step", "epoch", "split", "name", "value"])


# val.accuracy peaks at epoch 2; test.accuracy at epoch 2 and 3 differ, so the selection shows
SERIES = {
    "a0": {"val.accuracy": [0.1, 0.5, 0.9, 0.7], "test.accuracy": [0.1, 0.4, 0.80, 0.60], "val.loss": [2, 1, 0.5, 0.6]},
    "a1": {"val.accuracy": [0.1, 0.6, 0.8, 0.8], "test.accuracy": [0.1, 0.5, 0.90, 0.70], "val.loss": [2, 1, 0.4, 0.3]},
    "a2": {"val.accuracy": [0.1, 0.7, 0.9, 0.6], "test.accuracy": [0.1, 0.6, 1.00, 0.80], "val.loss": [2, 1, 0.6, 0.7]},
    "b0": {"val.accuracy": [0.1, 0.3, 0.4, 0.5], "test.accuracy": [0.1, 0.2, 0.30, 0.45], "val.loss": [2, 2, 1.5, 1.2]},
    "b1": {"val.accuracy": [0.1, 0.2, float("nan")], "test.accuracy": [0.1, 0.2, float("nan")],
           "val.loss": [2, 5, float("inf")]},
}
RUNS = [("a0", "A", 0, "done"), ("a1", "A", 1, "done"), ("a2", "A", 2, "done"),
        ("b0", "B", 0, "done"), ("b1", "B", 1, "diverged"), ("b2", "B", 2, "failed"), ("c0", "C", 0, "pending")]


@pytest.fixture
def frames():
    return make_metrics(SERIES), make_runs(RUNS)


def test_final_selection_picks_last_epoch(frames):
    metrics, runs = frames
    per_run = select_final(metrics, runs, "final").set_index("run")
    assert per_run.loc["a0", "epoch"] == 3 and per_run.loc["a0", "test.accuracy"] == pytest.approx(0.60)
    assert per_run.loc["b1", "epoch"] == 2 and math.isnan(per_run.loc["b1", "test.accuracy"])
    assert pd.isna(per_run.loc["b2", "epoch"]) and math.isnan(per_run.loc["b2", "test.accuracy"])
    assert list(per_run.index) == ["a0", "a1", "a2", "b0", "b1", "b2", "c0"]


def test_best_selection_picks_best_epoch_per_run(frames):
    metrics, runs = frames
    per_run = select_final(metrics, runs, "best", "val.accuracy").set_index("run")
    assert per_run.loc["a0", "epoch"] == 2 and per_run.loc["a0", "test.accuracy"] == pytest.approx(0.80)
    assert per_run.loc["a1", "epoch"] == 2  # tie between epochs 2 and 3: the earliest wins
    assert per_run.loc["a2", "epoch"] == 2 and per_run.loc["a2", "test.accuracy"] == pytest.approx(1.00)
    assert per_run.loc["b0", "epoch"] == 3
    assert per_run.loc["b1", "epoch"] == 1  # the NaN at the divergence is never "best"


def test_best_on_loss_like_metric_minimises(frames):
    metrics, runs = frames
    per_run = select_final(metrics, runs, "best", "val.loss").set_index("run")
    assert per_run.loc["a0", "epoch"] == 2
    assert per_run.loc["a1", "epoch"] == 3
    assert per_run.loc["a2", "epoch"] == 2
    assert per_run.loc["b1", "epoch"] == 1  # +inf is not the minimum of anything


def test_epoch_zero_is_best_only_without_later_evaluations():
    metrics = make_metrics({"r0": {"val.accuracy": [0.9, 0.2, 0.3]}, "r1": {"val.accuracy": [0.4]}})
    runs = make_runs([("r0", "A", 0, "done"), ("r1", "A", 1, "diverged")])
    per_run = select_final(metrics, runs, "best", "val.accuracy").set_index("run")
    assert per_run.loc["r0", "epoch"] == 2
    assert per_run.loc["r1", "epoch"] == 0


def test_aggregate_mean_sd_n_and_counts(frames):
    metrics, runs = frames
    agg = aggregate(select_final(metrics, runs, "best", "val.accuracy")).set_index("label")
    # A at the best epoch: test.accuracy 0.8, 0.9, 1.0 -> mean 0.9, SD (ddof=1) 0.1
    assert agg.loc["A", "test.accuracy.mean"] == pytest.approx(0.9)
    assert agg.loc["A", "test.accuracy.sd"] == pytest.approx(0.1)
    assert (agg.loc["A", "n"], agg.loc["A", "n_diverged"], agg.loc["A", "n_failed"]) == (3, 0, 0)
    # B: only b0 finished; the diverged and the failed run are counted, not averaged
    assert agg.loc["B", "test.accuracy.mean"] == pytest.approx(0.45)
    assert math.isnan(agg.loc["B", "test.accuracy.sd"])
    assert (agg.loc["B", "n"], agg.loc["B", "n_diverged"], agg.loc["B", "n_failed"]) == (1, 1, 1)
    # C is pending: no finished run, no value
    assert agg.loc["C", "n"] == 0 and math.isnan(agg.loc["C", "test.accuracy.mean"])
    assert list(agg.index) == ["A", "B", "C"]


def test_aggregate_excludes_diverged_values_even_if_finite():
    per_run = pd.DataFrame({
        "run": ["r0", "r1", "r2"], "label": ["A"] * 3, "replicate": [0, 1, 2],
        "status": ["done", "done", "diverged"], "epoch": [3, 3, 1], "test.loss": [1.0, 3.0, 1000.0],
    })
    row = aggregate(per_run).iloc[0]
    assert row["test.loss.mean"] == pytest.approx(2.0)
    assert row["test.loss.sd"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert (row["n"], row["n_diverged"], row["test.loss.n"]) == (2, 1, 2)


def test_aggregate_counts_missing_values_per_metric():
    per_run = pd.DataFrame({
        "run": ["r0", "r1"], "label": ["A", "A"], "replicate": [0, 1], "status": ["done", "done"],
        "epoch": [3, 3], "test.mse": [0.5, np.nan],
    })
    row = aggregate(per_run).iloc[0]
    assert (row["n"], row["test.mse.n"], row["test.mse.mean"]) == (2, 1, 0.5)


def test_curves_mean_sd_over_seeds(frames):
    metrics, runs = frames
    c = curves(metrics, runs, "val", "accuracy").set_index(["label", "epoch"])
    assert c.loc[("A", 1), "mean"] == pytest.approx(0.6)
    assert c.loc[("A", 1), "sd"] == pytest.approx(0.1)
    assert c.loc[("A", 3), "n"] == 3
    # B: the diverged run stays out by default, so B is b0 alone
    assert c.loc[("B", 1), "n"] == 1 and c.loc[("B", 1), "mean"] == pytest.approx(0.3)
    assert math.isnan(c.loc[("B", 1), "sd"])
    assert "C" not in c.index.get_level_values("label")


def test_curves_with_diverged_runs_use_finite_values_only(frames):
    metrics, runs = frames
    c = curves(metrics, runs, "val", "accuracy", include_diverged=True).set_index(["label", "epoch"])
    assert c.loc[("B", 1), "n"] == 2 and c.loc[("B", 1), "mean"] == pytest.approx(0.25)
    assert c.loc[("B", 2), "n"] == 1  # b1's NaN at epoch 2 contributes nothing
    assert c.loc[("B", 3), "n"] == 1  # b1 stopped


def test_run_curves_keep_the_divergence_point(frames):
    metrics, runs = frames
    rc = run_curves(metrics, runs, "val", "loss")
    assert set(rc["run"]) == {"b1"}
    assert list(rc["epoch"]) == [0, 1, 2] and np.isposinf(rc["value"].iloc[-1])


def test_batch_curves_run_along_steps():
    rows = [(r, s, s // 10, "batch", "loss", v) for r, vs in {"r0": [3, 2, 1], "r1": [5, 4, 3]}.items()
            for s, v in zip((5, 10, 15), vs)]
    metrics = pd.DataFrame(rows, columns=["run", "step", "epoch", "split", "name", "value"])
    runs = make_runs([("r0", "A", 0, "done"), ("r1", "A", 1, "done")])
    c = curves(metrics, runs, "batch", "loss")
    assert list(c["step"]) == [5, 10, 15] and list(c["mean"]) == [4, 3, 2]
    assert select_final(metrics, runs).columns.tolist() == ["run", "label", "replicate", "status", "epoch"]


def test_direction_and_rule_text():
    assert higher_is_better("val.accuracy") and higher_is_better("test.top1")
    assert not higher_is_better("val.loss") and not higher_is_better("test.mse")
    assert not higher_is_better("val.adv_error")
    assert describe_selection("final", "val.accuracy") == "final epoch"
    assert describe_selection("best", "val.accuracy").startswith("epoch with best val.accuracy")
    assert "lowest" in describe_selection("best", "val.mse")


def test_unknown_select_on_is_a_clear_error(frames):
    metrics, runs = frames
    with pytest.raises(SpecError, match="val.acc.*val.accuracy"):
        select_final(metrics, runs, "best", "val.acc")
    with pytest.raises(ValueError, match="selection"):
        select_final(metrics, runs, "median", "val.accuracy")
