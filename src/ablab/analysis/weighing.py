"""Inference example weighing over stored runs (seed 002, §4.3.1–§4.3.2, §4.4.4): α curves, α × B′, Table 4.1.

A post-hoc study evaluates each stored run at several α (the ``example_weighing`` evaluator, one
unit per run and α). ``weighing_frame`` gathers one row per (unit, split): the source model, its
replicate, its norm, its ghost size B′ and α; ``alpha_tuned`` picks α per source run on the
validation split and reads the test split there (the seed tunes α on validation data, §4.4.1).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

EVALUATOR = "example_weighing"
METRICS = ("weighed_accuracy", "weighed_loss")

# Table 4.1 of seed 002 (CIFAR-100, non-i.i.d. batches of 4 classes × 32, ResNet-18): accuracy %,
# α off and α tuned on validation, by (method, B′). seed002.md §4.3 (L992–1003).
THESIS_TABLE_4_1: dict[tuple[str, int], tuple[float, float]] = {
    ("batchnorm", 128): (40.1, 62.2),
    ("batch_renorm", 128): (69.0, 69.0),
    ("ghost_batchnorm", 64): (42.3, 50.8),
    ("ghost_batchnorm", 32): (57.8, 70.9),
    ("ghost_batchnorm", 16): (64.3, 72.2),
    ("ghost_batchnorm", 8): (68.7, 72.0),
    ("ghost_batchnorm", 4): (70.4, 71.5),
    ("ghost_batchnorm", 2): (68.4, 71.4),
    ("batch_group_norm", 2): (75.2, 76.1),
}
METHOD_NAMES = {"batchnorm": "Batch Norm", "batch_renorm": "Batch ReNorm", "ghost_batchnorm": "Ghost BN",
                "batch_group_norm": "Batch Group Norm", "group_norm": "Group Norm", "layer_norm": "Layer Norm",
                "instance_norm": "Instance Norm"}


def unit_alpha(spec: dict[str, Any]) -> Optional[float]:
    """α of a post-hoc unit's ``example_weighing`` evaluator (None: the unit has none)."""
    for ev in spec.get("evaluators", []):
        if isinstance(ev, dict) and ev.get("name") == EVALUATOR:
            return float(ev.get("alpha", 0.0))
        if ev == EVALUATOR:
            return 0.0
    return None


def ghost_size(run_spec: dict[str, Any]) -> Optional[int]:
    """B′: the examples per norm group of the run's training (the batch size for BatchNorm-like layers; None for none)."""
    norm = run_spec.get("model", {}).get("norm", "none")
    norm = {"name": norm} if isinstance(norm, str) else norm
    name = norm.get("name")
    if name == "ghost_batchnorm":
        return int(norm["ghost_size"])
    if name == "batch_group_norm":
        examples = norm.get("examples", 2)
        return int(examples) if examples is not None else int(run_spec["batch_size"])
    if name in ("group_norm", "layer_norm", "instance_norm"):
        return 1
    if name in ("batchnorm", "batch_renorm"):
        return int(run_spec["batch_size"])
    return None


def norm_name(run_spec: dict[str, Any]) -> str:
    norm = run_spec.get("model", {}).get("norm", "none")
    return norm if isinstance(norm, str) else str(norm.get("name"))


def weighing_frame(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per finished single-member unit with an α and split: model, replicate, norm, B′, α, accuracy, loss."""
    rows = []
    done = runs[(runs["status"] == "done")] if "status" in runs else runs
    values = metrics[metrics["name"].isin(METRICS)]
    by_run = {run: part for run, part in values.groupby("run")}
    for r in done.itertuples():
        spec = r.spec if isinstance(r.spec, dict) else {}
        alpha = unit_alpha(spec)
        members = spec.get("members", [])
        if alpha is None or len(members) != 1 or r.run not in by_run:
            continue
        member = members[0]
        source = member["spec"]
        model = member.get("label", "").rsplit(" #", 1)[0] or norm_name(source)
        for split, part in by_run[r.run].groupby("split"):
            got = part.set_index("name")["value"]
            rows.append({"unit": r.run, "model": model, "source_run": member["run"],
                         "replicate": int(source.get("replicate", 0)), "norm": norm_name(source),
                         "ghost": ghost_size(source), "batch_size": int(source.get("batch_size", 0)), "alpha": alpha,
                         "split": split, "accuracy": float(got.get("weighed_accuracy", math.nan)),
                         "loss": float(got.get("weighed_loss", math.nan))})
    columns = ["unit", "model", "source_run", "replicate", "norm", "ghost", "batch_size", "alpha", "split",
               "accuracy", "loss"]
    return pd.DataFrame(rows, columns=columns)


def alpha_curves(frame: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean and SD over replicates of accuracy and loss per (model, α) on ``split`` (Fig. 4.1/4.2)."""
    part = frame[frame["split"] == split]
    out = part.groupby(["model", "alpha"]).agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
                                               loss=("loss", "mean"), loss_sd=("loss", "std"),
                                               n=("accuracy", "size"), ghost=("ghost", "first"),
                                               norm=("norm", "first"))
    return out.reset_index()


PER_EXAMPLE = ("group_norm", "layer_norm", "instance_norm")  # their ordinary evaluation is α = 1


def off_alpha(norm: str) -> float:
    """α of a layer's ordinary evaluation: 1 for the per-example norms (GN, LN, IN), 0 for the batch ones."""
    return 1.0 if norm in PER_EXAMPLE else 0.0


def alpha_tuned(frame: pd.DataFrame, tune: str = "val", apply: str = "test") -> pd.DataFrame:
    """Per source run: accuracy with α off (``off_alpha``) and at the α with the best ``tune`` accuracy (ties: the smallest α).

    Columns: model, source_run, norm, ghost, alpha, off, tuned (on ``apply``). Empty without both splits.
    """
    rows = []
    for run, part in frame.groupby("source_run"):
        tuning, applied = part[part["split"] == tune], part[part["split"] == apply].set_index("alpha")
        off = off_alpha(part.iloc[0]["norm"])
        if tuning.empty or applied.empty or off not in applied.index:
            continue
        best = tuning.sort_values(["accuracy", "alpha"], ascending=[False, True]).iloc[0]["alpha"]
        if best not in applied.index:
            continue
        first = part.iloc[0]
        rows.append({"model": first["model"], "source_run": run, "norm": first["norm"], "ghost": first["ghost"],
                     "alpha": float(best), "off": float(applied.loc[off, "accuracy"]),
                     "tuned": float(applied.loc[best, "accuracy"])})
    return pd.DataFrame(rows, columns=["model", "source_run", "norm", "ghost", "alpha", "off", "tuned"])


def table_4_1(frame: pd.DataFrame, thesis: bool) -> pd.DataFrame:
    """The Table 4.1 analogue: per model, method, B′, accuracy % with α off and α tuned on val (means over runs).

    ``thesis``: add the thesis' two columns where (method, B′) is one of its rows (full-size CIFAR-100 specs).
    """
    tuned = alpha_tuned(frame)
    rows = []
    for model, part in tuned.groupby("model", sort=False):
        first = part.iloc[0]
        ghost = None if pd.isna(first["ghost"]) else int(first["ghost"])
        row = {"model": model, "method": METHOD_NAMES.get(first["norm"], first["norm"]), "ghost": ghost,
               "off": 100 * part["off"].mean(), "off_sd": 100 * part["off"].std(), "tuned": 100 * part["tuned"].mean(),
               "tuned_sd": 100 * part["tuned"].std(), "alphas": ", ".join(f"{a:g}" for a in part["alpha"]),
               "n": len(part)}
        ref = THESIS_TABLE_4_1.get((first["norm"], ghost)) if thesis else None
        row["thesis_off"], row["thesis_tuned"] = ref if ref else (np.nan, np.nan)
        rows.append(row)
    columns = ["model", "method", "ghost", "off", "off_sd", "tuned", "tuned_sd", "alphas", "n", "thesis_off",
               "thesis_tuned"]
    out = pd.DataFrame(rows, columns=columns)
    order = {name: i for i, name in enumerate(METHOD_NAMES.values())}
    key = out.assign(_m=out["method"].map(order).fillna(len(order)), _g=-out["ghost"].astype(float).fillna(0))
    return key.sort_values(["_m", "_g", "model"]).drop(columns=["_m", "_g"]).reset_index(drop=True)


GHOST_LIKE = ("ghost_batchnorm", "batchnorm")  # BatchNorm is ghost BN at B′ = the batch


def alpha_ghost_grid(frame: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean accuracy on ``split`` by B′ (rows) × α (columns) over the ghost BN and BN models (Fig. 4.4)."""
    part = frame[(frame["split"] == split) & frame["norm"].isin(GHOST_LIKE)]
    if part.empty:
        return pd.DataFrame()
    return part.pivot_table(index="ghost", columns="alpha", values="accuracy", aggfunc="mean").sort_index()
