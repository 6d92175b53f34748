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


# ---- readable with many variants, few seeds, and close final values (issue 21) -----------------------

def _lab(hex_colour: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour, straight from the CIE formulas."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_seventeen_arms_get_colours_far_apart_in_cielab():
    from ablab.report.figures import BASELINE_COLOURS, variant_colours

    arms = [f"arm{i}" for i in range(17)]
    for colours in (variant_colours(arms), variant_colours(["base", *arms], {"lower": "base"})):
        labs = [_lab(c) for label, c in colours.items() if label != "base"]
        assert len(labs) == 17
        gaps = [np.linalg.norm(a - b) for i, a in enumerate(labs) for b in labs[i + 1:]]
        assert min(gaps) > 25, min(gaps)  # tab20's first 17: 16.6
        for fixed in (*BASELINE_COLOURS.values(), "#ffffff"):  # none looks like a baseline or the background
            assert min(np.linalg.norm(a - _lab(fixed)) for a in labs) > 20


def _plateau(labels: list[str], seeds: int, epochs: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy from chance (0.1) to a plateau near 0.95 + 0.002·i for variant i."""
    rng = np.random.default_rng(7)
    runs, rows = [], []
    for i, label in enumerate(labels):
        for rep in range(seeds):
            run = f"{label}-{rep}"
            runs.append((run, label, rep, "done"))
            for epoch in range(epochs):
                top = 0.95 + 0.002 * i
                value = top - (top - 0.1) * np.exp(-1.5 * epoch) + rng.normal(0, 0.001)
                rows.append((run, epoch * 10, epoch, "test", "accuracy", value))
    return (pd.DataFrame(rows, columns=["run", "step", "epoch", "split", "name", "value"]),
            pd.DataFrame(runs, columns=["run", "label", "replicate", "status"]))


def test_close_final_accuracies_get_a_zoomed_row_of_the_last_epochs():
    metrics, runs = _plateau(["a", "b", "c"], seeds=3)
    fig = curve_figure(metrics, runs, "test.accuracy", COLOURS)
    full, zoom = fig.axes[0], fig.axes[1]
    lo, hi = full.get_ylim()
    assert lo < 0.15 and hi > 0.95  # from chance: the finals 0.950–0.954 are one line there
    finals = metrics[metrics["epoch"] == 9].groupby(runs.set_index("run").loc[metrics[metrics["epoch"] == 9]["run"],
                                                                               "label"].to_numpy())["value"].mean()
    zlo, zhi = zoom.get_ylim()
    assert zlo <= finals.min() and finals.max() <= zhi  # holds the final means
    assert (zhi - zlo) < 0.2 * (hi - lo) and zlo > 0.9  # and magnifies them
    assert min(zoom.get_xlim()) >= 9 - 0.3 * 9 - 1  # the last epochs only
    assert any("zooms into the last" in n for n in fig.ablab_notes)
    far = _plateau(["a"], seeds=3)
    assert len(curve_figure(*far, "test.accuracy", COLOURS).axes) == 1  # one variant: nothing to tell apart
    apart, runs = _plateau(["a", "b"], seeds=3)
    apart.loc[apart["run"].str.startswith("b") & (apart["epoch"] >= 2), "value"] -= 0.18  # 0.95 vs 0.77: visible
    assert len(curve_figure(apart, runs, "test.accuracy", COLOURS).axes) == 1


def test_bands_are_light_and_left_out_for_two_seeds_and_for_many_variants():
    from ablab.report.figures import BAND_ALPHA, MAX_BAND_VARIANTS

    assert BAND_ALPHA <= 0.12
    two = curve_figure(*_plateau(["a", "b"], seeds=2), "test.accuracy", COLOURS)
    assert not any(len(c.get_paths()) for ax in two.axes for c in ax.collections)  # n = 2: ±12.7 SE
    assert any("n = 2" in n for n in two.ablab_notes)
    labels = [f"arm{i}" for i in range(17)]
    many = curve_figure(*_plateau(labels, seeds=3), "test.accuracy", {k: "#1f77b4" for k in labels})
    assert not any(len(c.get_paths()) for ax in many.axes for c in ax.collections)
    assert any(f"more than {MAX_BAND_VARIANTS} variants" in n for n in many.ablab_notes)
    three = curve_figure(*_plateau(["a", "b"], seeds=3), "test.accuracy", COLOURS)
    assert any(len(c.get_paths()) for c in three.axes[0].collections)  # 3 seeds, 2 variants: bands


def test_coinciding_cka_markers_do_not_hide_each_other():
    """bitflip and kernels both at CKA 1 on every layer (seed 002 Fig. 5.1, small): each stays visible."""
    from ablab.report.sections.cka import cka_figure

    layers = ["conv0", "act0", "fc1"]
    table = pd.DataFrame([(v, layer, value, 0.0) for v, value in (("init", 0.97), ("bitflip", 1.0), ("kernels", 1.0))
                          for layer in layers], columns=["variant", "layer", "cka", "cka_err"])
    fig = cka_figure(table, {"init": "#1f77b4", "bitflip": "#ff7f0e", "kernels": "#2ca02c"})
    (ax,) = fig.axes
    by_colour = {line.get_color(): line for line in ax.get_lines() if line.get_marker() not in ("_", "|", "None", "")}
    flip, kernels = by_colour["#ff7f0e"], by_colour["#2ca02c"]
    assert list(flip.get_ydata()) == list(kernels.get_ydata()) == [1.0] * 3
    gap = np.asarray(kernels.get_xdata(), float) - np.asarray(flip.get_xdata(), float)
    assert np.all(gap > 0.05) and np.all(np.abs(np.asarray(flip.get_xdata()) - np.arange(3)) < 0.5)  # side by side
    assert flip.get_marker() != kernels.get_marker()
    assert kernels.get_zorder() > flip.get_zorder() and kernels.get_markersize() < flip.get_markersize()
