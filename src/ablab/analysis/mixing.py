"""Seed 002 ch. 2 tables: test error per mixing method (the Table 2.1 analogue) and the row-vs-column pairs.

A run's method is the last step of its ``augment`` list when that step is one of the 17 arms
(``ablab.data.mixing.METHODS``). Error = 100 · (1 − test accuracy) at the report's selected epoch,
per run; per variant the mean, SD (ddof 1) and n over finished runs; Δ = mean − the baseline's mean,
with Welch's p (``ablab.analysis.grids.welch_test``). Rows are sorted as the thesis sorts them: the
baseline, the prior work (mixup, BC+), then the rest by mean error, highest first.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from ablab.analysis.grids import welch_test
from ablab.data.mixing import METHODS, TABLE_NAMES

ERROR_FROM = "test.accuracy"
PRIOR_WORK = ("mixup", "bc_plus")
# test error %, mean of 3 runs at the final step: seed002.md §2.3, Tables 2.1 (L455–474) and 2.2 (L494–513)
THESIS_ERROR = {
    "cifar10": {"baseline": 5.4, "mixup": 4.3, "bc_plus": 4.2, "random_elements": 6.2, "random_pixels": 5.7,
                "random_column_interval": 5.1, "random_columns": 4.8, "horizontal_concat": 4.7, "random_rows": 4.6,
                "noisy_mixup": 4.5, "random_row_interval": 4.5, "vertical_concat": 4.4, "mixed_concat": 4.4,
                "random_square": 4.3, "random_2x2": 4.1, "vh_bc_plus": 3.8, "vh_mixup": 3.8},
    "cifar100": {"baseline": 23.6, "mixup": 21.3, "bc_plus": 21.1, "random_elements": 24.2, "random_pixels": 24.0,
                 "random_columns": 22.4, "noisy_mixup": 21.8, "horizontal_concat": 21.7,
                 "random_column_interval": 21.4, "random_square": 20.9, "random_rows": 20.9, "mixed_concat": 20.9,
                 "vertical_concat": 20.8, "random_2x2": 20.4, "random_row_interval": 20.1, "vh_bc_plus": 19.9,
                 "vh_mixup": 19.7},
}
# the seed's claim (L517): the row version beats its column twin on both CIFARs
ROW_COLUMN_PAIRS = (("vertical_concat", "horizontal_concat"), ("random_rows", "random_columns"),
                    ("random_row_interval", "random_column_interval"))


def method_of(spec: Any) -> str | None:
    """The mixing arm of a run spec (a dict): its last augment step's name, if one of the 17 arms."""
    steps = spec.get("augment") if isinstance(spec, dict) else None
    if not steps:
        return None
    last = steps[-1]
    name = last if isinstance(last, str) else last.get("name") if isinstance(last, dict) else None
    return name if name in METHODS else None


def methods_by_label(runs: pd.DataFrame) -> dict[str, str]:
    """Variant label -> mixing arm, for variants whose runs all use one arm."""
    out: dict[str, set] = {}
    for label, spec in zip(runs["label"], runs["spec"] if "spec" in runs else [None] * len(runs)):
        out.setdefault(label, set()).add(method_of(spec))
    return {label: next(iter(m)) for label, m in out.items() if len(m) == 1 and None not in m}


def has_mixing_axis(runs: pd.DataFrame) -> bool:
    """Does the study compare mixing arms (at least two distinct ones)?"""
    return len(set(methods_by_label(runs).values())) >= 2


def dataset_of(runs: pd.DataFrame) -> str | None:
    """The data name every run shares, else None."""
    names = {(s.get("data") or {}).get("name") if isinstance(s, dict) else None for s in runs.get("spec", [])}
    return next(iter(names)) if len(names) == 1 else None


def run_errors(per_run: pd.DataFrame, metric: str = ERROR_FROM) -> pd.DataFrame:
    """label, run, error (%) of every finished run with a finite value of ``metric``."""
    if metric not in per_run:
        return pd.DataFrame(columns=["label", "run", "error"])
    done = per_run[(per_run["status"] == "done") & np.isfinite(per_run[metric].to_numpy(dtype=float))]
    return pd.DataFrame({"label": done["label"], "run": done["run"], "error": 100.0 * (1.0 - done[metric])})


def _welch(a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings():  # equal constant samples: p is NaN, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        return welch_test(a, b)[1]


def error_table(per_run: pd.DataFrame, runs: pd.DataFrame, metric: str = ERROR_FROM) -> pd.DataFrame:
    """One row per mixing variant: method, name in the thesis, n, error mean/SD, Δ vs baseline and Welch p, thesis."""
    methods = methods_by_label(runs)
    errors = run_errors(per_run, metric)
    samples = {label: errors.loc[errors["label"] == label, "error"].to_numpy(dtype=float) for label in methods}
    baselines = [label for label, m in methods.items() if m == "baseline"]
    base = samples[baselines[0]] if len(baselines) == 1 else np.array([])
    thesis = THESIS_ERROR.get(dataset_of(runs) or "", {})
    rows = []
    for label, method in methods.items():
        a = samples[label]
        rows.append({
            "label": label, "method": method, "thesis_name": TABLE_NAMES[method], "n": len(a),
            "error_mean": a.mean() if len(a) else np.nan, "error_sd": a.std(ddof=1) if len(a) > 1 else np.nan,
            "delta": a.mean() - base.mean() if len(a) and len(base) and method != "baseline" else np.nan,
            "p": _welch(a, base) if method != "baseline" else np.nan,
            "thesis_error": thesis.get(method, np.nan),
        })
    return sort_like_the_thesis(pd.DataFrame(rows, columns=["label", "method", "thesis_name", "n", "error_mean",
                                                           "error_sd", "delta", "p", "thesis_error"]))


def sort_like_the_thesis(table: pd.DataFrame) -> pd.DataFrame:
    """The baseline, then mixup and BC+ (prior work), then the rest by mean error, highest first (Tables 2.1–2.2)."""
    group = table["method"].map(lambda m: 0 if m == "baseline" else 1 + PRIOR_WORK.index(m) if m in PRIOR_WORK else 9)
    key = table.assign(_group=group, _error=-table["error_mean"].fillna(-np.inf))
    ordered = key.sort_values(["_group", "_error"], kind="stable")
    return ordered.drop(columns=["_group", "_error"]).reset_index(drop=True)


def row_column_pairs(per_run: pd.DataFrame, runs: pd.DataFrame, metric: str = ERROR_FROM) -> pd.DataFrame:
    """Each row method beside its column twin: their errors, Δ = row − column and Welch p (the seed: Δ < 0)."""
    methods = methods_by_label(runs)
    errors = run_errors(per_run, metric)
    rows = []
    for row_method, col_method in ROW_COLUMN_PAIRS:
        row_labels = [label for label, m in methods.items() if m == row_method]
        col_labels = [label for label, m in methods.items() if m == col_method]
        if len(row_labels) != 1 or len(col_labels) != 1:
            continue
        a = errors.loc[errors["label"] == row_labels[0], "error"].to_numpy(dtype=float)
        b = errors.loc[errors["label"] == col_labels[0], "error"].to_numpy(dtype=float)
        rows.append({
            "row_method": row_method, "column_method": col_method,
            "row_error_mean": a.mean() if len(a) else np.nan, "row_error_sd": a.std(ddof=1) if len(a) > 1 else np.nan,
            "row_n": len(a),
            "column_error_mean": b.mean() if len(b) else np.nan,
            "column_error_sd": b.std(ddof=1) if len(b) > 1 else np.nan, "column_n": len(b),
            "delta": a.mean() - b.mean() if len(a) and len(b) else np.nan, "p": _welch(a, b),
        })
    return pd.DataFrame(rows, columns=["row_method", "column_method", "row_error_mean", "row_error_sd", "row_n",
                                       "column_error_mean", "column_error_sd", "column_n", "delta", "p"])
