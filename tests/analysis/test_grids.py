"""Grids → tables: pivots of known means, best cells, Welch tests, baseline choice, exports that round-trip."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablab.analysis.grids import (
    axis_label,
    best_configurations,
    best_to_csv,
    best_to_latex,
    best_to_markdown,
    grid_table,
    grid_to_latex,
    grid_to_markdown,
    grids_to_csv,
    welch_test,
)
from ablab.errors import SpecError
from ablab.spec import make_label

LRS = [0.1, 0.01, 0.001]
WDS = [0.0, 1e-4]
SAMS = [None, {"rho": 0.05}]
OFFSETS = [-0.1, 0.0, 0.3]  # per replicate: mean offset 0.0667, SD known


def _value(opt: str, lr: float, wd: float, sam, rep: int) -> float:
    """A made-up test loss with a known mean per cell: best at adam, lr 0.01, wd 1e-4, no SAM."""
    base = {0.1: 2.0, 0.01: 1.0, 0.001: 1.5}[lr] + (0.5 if opt == "sgd" else 0.0)
    base += 0.2 if sam else 0.0
    base -= 0.05 if wd else 0.0
    return base + OFFSETS[rep] * (1 + 10 * lr)  # spread differs per lr, so Welch ≠ Student


def make_frames(diverge: tuple | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """per_run and runs frames as select_final and Store.runs return them (the columns used)."""
    runs, per_run = [], []
    for opt in ("sgd", "adam"):
        for lr in LRS:
            for wd in WDS:
                for sam in SAMS:
                    axes = {"optimizer.name": opt, "optimizer.lr": lr, "optimizer.weight_decay": wd, "sam": sam}
                    label = make_label(axes)
                    for rep in range(3):
                        run = f"{opt}-{lr}-{wd}-{bool(sam)}-{rep}"
                        status = "diverged" if diverge == (opt, lr, wd, bool(sam), rep) else "done"
                        value = np.nan if status == "diverged" else _value(opt, lr, wd, sam, rep)
                        spec = {"optimizer": {"name": opt, "lr": lr, "weight_decay": wd}, "sam": sam,
                                "weight_decay": {"value": 0.0, "mode": "l2"}}
                        runs.append({"run": run, "label": label, "axes": axes, "status": status, "spec": spec,
                                     "info": {"steps": 10, "gradient_evaluations": 10}})
                        per_run.append({"run": run, "label": label, "replicate": rep, "status": status,
                                        "epoch": 5, "test.loss": value, "test.accuracy": -value})
    return pd.DataFrame(per_run), pd.DataFrame(runs)


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
            values = [_value("adam", lr, wd, None, r) for r in range(3)]
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
    values = [_value("adam", 0.1, 0.0, None, r) for r in (0, 2)]
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


def _parse_cells(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"(-?\d+\.\d+(?:e[+-]\d+)?) (?:±|\$\\pm\$)", text)]


def test_csv_markdown_and_latex_round_trip_the_numbers():
    per_run, runs = make_frames()
    tables = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")
    back = pd.read_csv(io.StringIO(grids_to_csv(tables)))
    assert len(back) == 4 * 3 * 2 and back["best"].sum() == 4
    for t in tables:
        rows = back[(back["optimizer.name"] == t.facet["optimizer.name"]) & (back["sam"] == t.facet["sam"])]
        got = rows.pivot(index="optimizer.lr", columns="optimizer.weight_decay", values="mean")
        want = t.mean.rename(index=float, columns=float)
        assert np.array_equal(got.loc[want.index, want.columns].to_numpy(), want.to_numpy())  # full precision
    adam = tables[2]
    for text in (grid_to_markdown(adam), grid_to_latex(adam)):
        assert _parse_cells(text) == pytest.approx(adam.mean.to_numpy().ravel().tolist(), rel=5e-4)
    assert "**1.023 ± 0.23**" in grid_to_markdown(adam) and r"\textbf{1.023 $\pm$ 0.23}" in grid_to_latex(adam)
    assert r"optimizer.lr \textbackslash{} optimizer.weight\_decay" in grid_to_latex(adam)

    best = best_configurations(per_run, runs, "test.loss", k=4, baseline={"sam": {"rho": 0.05}})
    full = pd.read_csv(io.StringIO(best_to_csv(best)))
    assert len(full) == 24 and np.array_equal(full["mean"].to_numpy(), best.ranking["mean"].to_numpy())
    assert full.loc[0, "p_vs_runner_up"] == best.runner_up.p and full.loc[0, "p_vs_baseline"] == best.baseline.p
    for text in (best_to_markdown(best), best_to_latex(best)):
        assert _parse_cells(text) == pytest.approx(best.table["mean"].tolist(), rel=5e-4)
        assert f"p = {best.runner_up.p:.2g}" in text


def test_labels_with_markup_are_escaped_in_markdown_and_latex():
    per_run, runs = make_frames()
    runs["axes"] = [{**a, "optimizer.name": "a|b_&%$#"} if a["optimizer.name"] == "sgd" else a for a in runs["axes"]]
    t = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")[0]
    assert r"a\|b_&%$#" in grid_to_markdown(t)
    assert r"a|b\_\&\%\$\#" in grid_to_latex(t)


def test_axis_labels_are_readable():
    assert axis_label(None) == "none" and axis_label({"rho": 0.05}) == "rho=0.05"
    assert axis_label(3e-5) == "3e-05" and axis_label({"name": "sgd", "lr": 0.1}) == "sgd(lr=0.1)"
