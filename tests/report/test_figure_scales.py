"""Figure axes: log scale for losses that span decades, limits zoomed to the data that never clip
a value, bands that are the 95 % t interval of the mean (none for n = 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablab.report.figures import curve_figure
from ablab.report.norm_figures import sparsity_figure

EPOCHS = 6


def _study() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Variant a: 3 seeds; b: 3 seeds; c: one seed; d: one diverged seed. Loss 2.3 → ~0.01, accuracy 0.95–1."""
    rng = np.random.default_rng(5)
    runs, rows = [], []
    plan = [("a", 0, "done"), ("a", 1, "done"), ("a", 2, "done"), ("b", 0, "done"), ("b", 1, "done"),
            ("b", 2, "done"), ("c", 0, "done"), ("d", 0, "diverged")]
    for i, (label, rep, status) in enumerate(plan):
        run = f"r{i}"
        runs.append((run, label, rep, status))
        rate = {"a": 0.9, "b": 0.7, "c": 0.5, "d": 0.5}[label]
        for epoch in range(EPOCHS):
            loss = 2.3 * np.exp(-rate * epoch) * (1 + 0.02 * rng.normal())
            acc = 0.95 + 0.008 * epoch + 0.002 * rng.normal()
            if status == "diverged" and epoch >= 3:
                loss, acc = (float("inf"), float("nan")) if epoch == 3 else (None, None)
            if loss is None:
                continue
            rows += [(run, epoch * 10, epoch, "train", "loss", loss), (run, epoch * 10, epoch, "val", "accuracy", acc)]
    return (pd.DataFrame(rows, columns=["run", "step", "epoch", "split", "name", "value"]),
            pd.DataFrame(runs, columns=["run", "label", "replicate", "status"]))


COLOURS = {"a": "#1f77b4", "b": "#ff7f0e", "c": "#2ca02c", "d": "#d62728"}


def drawn_y(ax) -> np.ndarray:
    """Every finite y the axes draws: its lines' points and its filled bands' vertices."""
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    ys += [path.vertices[:, 1] for coll in ax.collections for path in coll.get_paths()]
    ys = np.concatenate(ys) if ys else np.array([])
    return ys[np.isfinite(ys)]


def assert_inside(ax) -> None:
    lo, hi = ax.get_ylim()
    ys = drawn_y(ax)
    assert len(ys) and ys.min() >= lo and ys.max() <= hi, (lo, hi, ys.min(), ys.max())


def test_loss_spanning_decades_is_on_a_log_axis_and_nothing_is_clipped():
    metrics, runs = _study()
    fig = curve_figure(metrics, runs, "train.loss", COLOURS)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert_inside(ax)
    means = metrics[(metrics["name"] == "loss") & np.isfinite(metrics["value"])]["value"]
    lo, hi = ax.get_ylim()
    assert lo > means.min() / 2 and hi < means.max() * 5  # a margin and the diverged ×, not decades of space


def test_accuracy_axis_is_zoomed_to_the_data():
    metrics, runs = _study()
    fig = curve_figure(metrics, runs, "val.accuracy", COLOURS)
    (ax,) = fig.axes
    assert ax.get_yscale() == "linear"
    lo, hi = ax.get_ylim()
    assert 0.9 < lo < 0.95 and 0.99 < hi < 1.05  # not 0–1
    assert_inside(ax)


def test_bands_are_the_95_percent_t_interval_and_absent_for_one_seed():
    metrics, runs = _study()
    fig = curve_figure(metrics, runs, "val.accuracy", COLOURS)
    (ax,) = fig.axes
    bands = [c for c in ax.collections if len(c.get_paths())]
    assert len(bands) == 2  # a and b; not c (n = 1), not d (diverged)
    values = metrics[(metrics["name"] == "accuracy") & (metrics["epoch"] == 2)]
    a = values[values["run"].isin(["r0", "r1", "r2"])]["value"].to_numpy()
    low, high = stats.t.interval(0.95, 2, loc=a.mean(), scale=stats.sem(a))
    vertices = np.concatenate([p.vertices for p in bands[0].get_paths()])
    at_two = vertices[np.isclose(vertices[:, 0], 2.0), 1]
    assert at_two.min() == pytest.approx(max(low, ax.get_ylim()[0]))
    assert at_two.max() == pytest.approx(min(high, ax.get_ylim()[1]))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "95 % CI of the mean (t)" in legend and "c (n=1)" in legend


def test_relu_sparsity_axis_is_zoomed_and_holds_every_value():
    steps = np.arange(8) * 5
    run = lambda level: ("done", steps, np.column_stack([level + 0.01 * np.sin(steps), level - 0.02 + 0 * steps]), ["act0", "act1"])
    series = {"a": [run(0.48), run(0.50)], "b": [run(0.53)]}
    fig = sparsity_figure(series, COLOURS, {}, None)
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert 0.4 < lo and hi < 0.6  # not fixed to [0, 1]
        assert_inside(ax)


def test_relu_sparsity_values_outside_zero_one_are_not_clipped():
    """A wrong probe value (the −0.76 of issue 12) must show, not vanish under a fixed [0, 1] axis."""
    steps = np.arange(4) * 5
    series = {"a": [("done", steps, np.array([[0.5], [-0.76], [0.5], [0.49]]), ["act0"])]}
    (ax,) = sparsity_figure(series, COLOURS, {}, None).axes
    assert ax.get_ylim()[0] < -0.76
    assert_inside(ax)
