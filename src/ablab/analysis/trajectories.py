"""Statistics of norm-parameter trajectories: how far γ and β move from their neutral values.

Dissecting BatchNorm (seed 001) reads its contour plots by eye and asks, in its outlook (ch. 5),
for numbers instead: "the mean or median, magnitude, and number of zero-crossings for the
trajectories of γ and β". Here, per norm layer and parameter, from a ``probe_norm_params.npz``
artifact (``steps`` [T], ``<layer>/gamma`` and ``<layer>/beta`` [T, C]):

- ``final_mean``, ``final_median``: over the C features at the last recorded step;
- ``activity``: mean over features of |γ − 1| or |β| at the last step (§3.3.1's "activity");
- ``crossings``: sign changes of (value − neutral) along each feature's trajectory, averaged over
  features; a value exactly at the neutral one is a touch, not a side, so +,0,+ is no crossing
  and +,0,− is one;
- ``within_tol``: the fraction of features that stay within ``tol`` of the neutral value at
  every recorded step.

A frozen parameter (``learnable`` false in the artifact's meta, e.g. γ of ``affine: beta``) is
kept as a row with ``learnable = False``: the probe records its effective value, exactly 1 or 0,
so it has activity 0, no crossings and ``within_tol`` 1 by construction. Tables that compare
learned trajectories drop these rows (``aggregate_over_seeds(..., learnable_only=True)``).

Steps where a layer holds a non-finite value (a diverged run) are dropped, so the statistics
describe the trajectory up to where the run diverged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NEUTRAL = {"gamma": 1.0, "beta": 0.0}
PARAMS = ("gamma", "beta")
STATS = ("final_mean", "final_median", "activity", "crossings", "within_tol")
_KEYS = ("layer", "param")


def count_crossings(values: np.ndarray, neutral: float) -> np.ndarray:
    """Per feature: how often ``values`` [T, C] changes sides of ``neutral``; exact touches are no side."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    side = np.sign(values - neutral)
    if len(side) < 2:
        return np.zeros(side.shape[1], dtype=np.int64)
    # carry the last non-zero side forward over touches, then count changes between sides
    rows = np.where(side != 0, np.arange(len(side))[:, None], 0)
    held = np.take_along_axis(side, np.maximum.accumulate(rows, axis=0), axis=0)
    return ((held[1:] != held[:-1]) & (held[:-1] != 0)).sum(axis=0).astype(np.int64)


def finite_rows(values: np.ndarray) -> np.ndarray:
    """The rows of ``values`` [T, C] up to (not including) the first one with a non-finite entry."""
    values = np.asarray(values, dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    stop = int(np.argmax(bad)) if bad.any() else len(values)
    return values[:stop]


def parameter_stats(values: np.ndarray, param: str, tol: float = 0.05) -> dict[str, float]:
    """The statistics above for one parameter's trajectory ``values`` [T, C]."""
    neutral = NEUTRAL[param]
    values = finite_rows(values)
    if not len(values) or not values.shape[1]:
        return {"steps": len(values), **{s: np.nan for s in STATS}}
    final = values[-1]
    return {
        "steps": len(values),
        "final_mean": float(final.mean()),
        "final_median": float(np.median(final)),
        "activity": float(np.abs(final - neutral).mean()),
        "crossings": float(count_crossings(values, neutral).mean()),
        "within_tol": float((np.abs(values - neutral) <= tol).all(axis=0).mean()),
    }


def trajectory_stats(arrays: dict[str, np.ndarray], meta: dict, tol: float = 0.05) -> pd.DataFrame:
    """One row per norm layer and parameter (γ, β): layer, param, features, learnable, steps and ``STATS``."""
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    rows = []
    for layer in meta.get("layers", []):
        name = layer["name"]
        for param in PARAMS:
            key = f"{name}/{param}"
            if key not in arrays:
                continue
            values = np.asarray(arrays[key], dtype=float)
            rows.append({
                "layer": name,
                "param": param,
                "features": int(values.shape[-1]),
                "learnable": bool(layer.get("learnable", {}).get(param, True)),
                **parameter_stats(values, param, tol),
            })
    columns = ["layer", "param", "features", "learnable", "steps", *STATS]
    return pd.DataFrame(rows, columns=columns)


def aggregate_over_seeds(per_run: pd.DataFrame, by: str = "label", learnable_only: bool = False) -> pd.DataFrame:
    """Mean ± SD (ddof=1) of every statistic over the runs of each variant, layer and parameter.

    ``per_run`` holds ``trajectory_stats`` rows with a ``run`` and a ``by`` column. Output columns:
    ``by``, layer, param, features, learnable, n (runs), and ``<stat>.mean`` / ``<stat>.sd`` (NaN
    with one run). Variants, layers and parameters keep their order of first appearance.
    """
    columns = [by, *_KEYS, "features", "learnable", "n"] + [f"{s}.{x}" for s in STATS for x in ("mean", "sd")]
    if learnable_only:
        per_run = per_run[per_run["learnable"].astype(bool)]
    if per_run.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in per_run.groupby([by, *_KEYS], sort=False):
        row = dict(zip([by, *_KEYS], key))
        row.update(features=int(group["features"].iloc[0]), learnable=bool(group["learnable"].all()),
                   n=int(group["run"].nunique()))
        for stat in STATS:
            values = group[stat].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            row[f"{stat}.mean"] = values.mean() if len(values) else np.nan
            row[f"{stat}.sd"] = values.std(ddof=1) if len(values) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
