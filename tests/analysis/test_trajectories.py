"""Trajectory statistics of γ and β on hand-made trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ablab.analysis.trajectories import aggregate_over_seeds, count_crossings, finite_rows, trajectory_stats
from ablab.artifacts import load_npz
from ablab.registry import NORMS
from ablab.train.probes import NormParams


def _artifact(gamma: np.ndarray, beta: np.ndarray, learn_gamma: bool = True, learn_beta: bool = True, name: str = "norm0"):
    steps = np.arange(len(gamma)) * 5
    arrays = {"steps": steps, f"{name}/gamma": np.asarray(gamma, float), f"{name}/beta": np.asarray(beta, float)}
    meta = {"layers": [{"name": name, "features": np.asarray(gamma).shape[1], "type": "AblatedBatchNorm2d",
                        "learnable": {"gamma": learn_gamma, "beta": learn_beta}}]}
    return arrays, meta


def test_crossings_count_side_changes_and_ignore_touches():
    beta = np.array([
        # f0: +, −, +, −  → 3     f1: +, 0, +, +   → 0 (a touch)   f2: 0, 0, −, +  → 1
        # f3: +, 0, −, −  → 1 (crossing through 0)                    f4: always 0  → 0
        [0.2, 0.1, 0.0, 0.3, 0.0],
        [-0.1, 0.0, 0.0, 0.0, 0.0],
        [0.1, 0.2, -0.1, -0.2, 0.0],
        [-0.3, 0.2, 0.4, -0.1, 0.0],
    ])
    np.testing.assert_array_equal(count_crossings(beta, 0.0), [3, 0, 1, 1, 0])
    # the same shapes around γ's neutral value 1
    np.testing.assert_array_equal(count_crossings(beta + 1.0, 1.0), [3, 0, 1, 1, 0])
    assert count_crossings(np.array([0.5]), 0.0).tolist() == [0]


def test_known_stats_for_gamma_and_beta():
    gamma = np.array([[1.0, 1.0, 1.0, 1.0],
                      [1.2, 0.97, 1.01, 0.9],
                      [1.4, 1.02, 0.99, 0.7]])
    beta = np.array([[0.0, 0.0, 0.0, 0.0],
                     [0.3, -0.01, 0.2, -0.3],
                     [-0.1, 0.04, 0.4, -0.5]])
    stats = trajectory_stats(*_artifact(gamma, beta), tol=0.05).set_index("param")
    g, b = stats.loc["gamma"], stats.loc["beta"]
    assert g["layer"] == "norm0" and g["features"] == 4 and g["steps"] == 3 and bool(g["learnable"])
    assert g["final_mean"] == pytest.approx(np.mean([1.4, 1.02, 0.99, 0.7]))
    assert g["final_median"] == pytest.approx(np.median([1.4, 1.02, 0.99, 0.7]))
    assert g["activity"] == pytest.approx(np.mean([0.4, 0.02, 0.01, 0.3]))
    assert g["crossings"] == pytest.approx((0 + 1 + 1 + 0) / 4)  # f1: −→+, f2: +→−
    assert g["within_tol"] == pytest.approx(2 / 4)  # f1 and f2 never leave ±0.05 of 1
    assert b["activity"] == pytest.approx(np.mean([0.1, 0.04, 0.4, 0.5]))
    assert b["crossings"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert b["within_tol"] == pytest.approx(1 / 4)
    assert trajectory_stats(*_artifact(gamma, beta), tol=0.5).set_index("param").loc["beta", "within_tol"] == 1.0


def test_frozen_parameters_are_reported_as_frozen():
    gamma = np.ones((4, 3))
    beta = np.array([[0.0, 0.0, 0.0], [0.1, -0.2, 0.0], [0.2, -0.1, 0.1], [0.3, 0.1, 0.2]])
    stats = trajectory_stats(*_artifact(gamma, beta, learn_gamma=False), tol=0.05).set_index("param")
    frozen = stats.loc["gamma"]
    assert not frozen["learnable"] and bool(stats.loc["beta", "learnable"])
    assert frozen["activity"] == 0 and frozen["crossings"] == 0 and frozen["within_tol"] == 1.0
    assert frozen["final_mean"] == 1.0


def test_a_diverged_trajectory_is_cut_where_it_stops():
    beta = np.array([[0.0, 0.0], [0.2, -0.1], [0.3, -0.2], [np.nan, 5.0], [np.inf, 1.0]])
    assert len(finite_rows(beta)) == 3
    stats = trajectory_stats(*_artifact(np.ones_like(beta), beta)).set_index("param")
    assert stats.loc["beta", "steps"] == 3
    assert stats.loc["beta", "final_mean"] == pytest.approx(0.05)


def test_negative_tolerance_is_an_error():
    with pytest.raises(ValueError, match="tol"):
        trajectory_stats(*_artifact(np.ones((2, 2)), np.zeros((2, 2))), tol=-0.1)


def test_aggregate_over_seeds_is_mean_and_sd_per_variant_layer_param():
    rows = []
    for run, label, activity in [("a0", "bn", 0.1), ("a1", "bn", 0.3), ("b0", "bn_beta", 0.5)]:
        for param, learnable in (("gamma", label == "bn"), ("beta", True)):
            rows.append({"run": run, "label": label, "layer": "norm0", "param": param, "features": 4,
                         "learnable": learnable, "steps": 3, "final_mean": activity, "final_median": activity,
                         "activity": activity if learnable else 0.0, "crossings": 1.0, "within_tol": 0.5})
    agg = aggregate_over_seeds(pd.DataFrame(rows)).set_index(["label", "param"])
    assert agg.loc[("bn", "beta"), "n"] == 2
    assert agg.loc[("bn", "beta"), "activity.mean"] == pytest.approx(0.2)
    assert agg.loc[("bn", "beta"), "activity.sd"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert np.isnan(agg.loc[("bn_beta", "beta"), "activity.sd"])  # one run: no SD
    learned = aggregate_over_seeds(pd.DataFrame(rows), learnable_only=True)
    assert ("bn_beta", "gamma") not in set(zip(learned["label"], learned["param"]))
    assert list(aggregate_over_seeds(pd.DataFrame(rows))["label"].unique()) == ["bn", "bn_beta"]


def test_stats_of_a_real_probe_artifact():
    """The probe's own file format: γ frozen by ``affine: beta`` is exactly 1 and reported as frozen."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), NORMS.create({"name": "batchnorm", "affine": "beta"}, num_features=6, dim=1),
                          nn.ReLU(), nn.Linear(6, 2))
    probe = NormParams(model, every_steps=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    probe.after_step(0, 0)
    for step in range(1, 6):
        x = torch.randn(16, 4)
        loss = model(x).pow(2).mean() - model[1](model[0](x)).mean()  # pushes β up
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.after_step(step, 1)
    arrays, meta = load_npz(probe.artifacts()[NormParams.artifact])
    stats = trajectory_stats(arrays, meta).set_index("param")
    assert stats.loc["gamma", "learnable"] == False  # noqa: E712  (numpy bool)
    assert stats.loc["gamma", "activity"] == 0 and stats.loc["gamma", "steps"] == 6
    assert stats.loc["beta", "learnable"] and stats.loc["beta", "activity"] > 0
