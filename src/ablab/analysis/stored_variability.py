"""Variability per variant of a stored study, from the test logits its runs stored (seed 002 Tables 5.1/5.5/B.1).

Each variant's runs are its replicates. A run counts when it stored predictions on the split at the
variant's latest prediction epoch and its logits there are finite; the others are left out and
named (no predictions there: typically a run that diverged before its last evaluation; NaN
logits: a diverged model). Accuracy and loss come from the logits and the stored labels, so every
number of the table is a function of the stored ``.npy`` files alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ablab.analysis.variability import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    METRICS,
    accuracy_percent,
    cross_entropy,
    variability,
    variability_reduction,
)

USED_STATUSES = ("done", "diverged")


@dataclass
class VariantLogits:
    """The stacked test logits [R, N, C] of a variant's usable runs, their labels and what was left out."""

    label: str
    epoch: int | None
    runs: list[str] = field(default_factory=list)
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    left_out: dict[str, str] = field(default_factory=dict)  # run id -> why
    problem: str = ""  # why no metric could be computed at all


def load_variant_logits(store: Any, runs: pd.DataFrame, split: str = "test") -> list[VariantLogits]:
    """Per variant (study order), the logits of its runs at the variant's latest stored prediction epoch."""
    out = []
    for label, group in runs.groupby("label", sort=False):
        group = group[group["status"].isin(USED_STATUSES)]
        epochs = {r: store.prediction_epochs(r, split) for r in group["run"]}
        stored = [e for es in epochs.values() for e in es]
        variant = VariantLogits(str(label), max(stored) if stored else None)
        if variant.epoch is None:
            variant.problem = f"no run stored predictions on '{split}'"
        else:
            _stack(store, variant, epochs, split)
        out.append(variant)
    return out


def _stack(store: Any, variant: VariantLogits, epochs: dict[str, list[int]], split: str) -> None:
    arrays, labels = [], []
    for run, have in epochs.items():
        if variant.epoch not in have:
            variant.left_out[run] = f"no predictions at epoch {variant.epoch}"
            continue
        logits = store.load_predictions(run, split, variant.epoch)
        if logits.ndim != 2 or (arrays and logits.shape != arrays[0].shape):
            variant.left_out[run] = f"predictions of shape {logits.shape}"
            continue
        if not np.isfinite(logits).all():
            variant.left_out[run] = "non-finite logits (diverged)"
            continue
        arrays.append(logits)
        variant.runs.append(run)
        labels.append(_labels(store, run, split, variant.epoch))
    if arrays:
        variant.logits = np.stack(arrays)
        variant.labels = _common_labels(variant, labels)


def _labels(store: Any, run: str, split: str, epoch: int) -> np.ndarray | None:
    try:
        return store.load_labels(run, split, epoch)
    except Exception:  # a store written before labels were stored: label-free metrics only
        return None


def _common_labels(variant: VariantLogits, labels: list[np.ndarray | None]) -> np.ndarray | None:
    if any(y is None for y in labels):
        variant.problem = "some runs stored no labels: accuracy, loss and ensemble Δ are not computed"
        return None
    if any(not np.array_equal(y, labels[0]) for y in labels[1:]):
        variant.problem = ("the runs' stored labels differ (different test sets): accuracy, loss and ensemble Δ "
                           "are not computed")
        return None
    return labels[0]


def variability_table(variants: list[VariantLogits], baselines: dict[str, str | dict[str, str | None]] | None = None,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """One row per variant: n, left out, mean accuracy and CE, the five metrics ± errors, VR % per baseline role.

    ``baselines``: role -> variant label, or role -> label -> its own baseline label (``report.baselines``
    resolved per variant, ``ablab.report.baselines``); VR (seed002.md §5.1) of each variant against its
    baseline variant, NaN when either lacks a metric or the variant has no baseline.
    """
    rows = []
    for v in variants:
        row: dict[str, Any] = {"variant": v.label, "epoch": v.epoch, "n": len(v.runs), "left_out": len(v.left_out)}
        if v.logits is not None and v.labels is not None:
            row["accuracy_mean"] = float(accuracy_percent(v.logits, v.labels).mean())
            row["loss_mean"] = float(cross_entropy(v.logits, v.labels).mean())
        if v.logits is not None and len(v.runs) >= 2:  # one run has no spread and no pair
            for name, value in variability(v.logits, v.labels, resamples, seed).items():
                row[name], row[f"{name}_err"] = value.value, value.error
        rows.append(row)
    columns = ["variant", "epoch", "n", "left_out", "accuracy_mean", "loss_mean"]
    columns += [c for m in METRICS for c in (m, f"{m}_err")]
    table = pd.DataFrame(rows).reindex(columns=columns)
    for role, name in (baselines or {}).items():
        table[f"vr_{role}"] = _reduction(table, name)
    return table


def _reduction(table: pd.DataFrame, baseline: str | dict[str, str | None]) -> list[float]:
    """VR % of each row against its baseline row (one label for all, or label -> label)."""
    by_variant = {str(v): i for i, v in enumerate(table["variant"])}
    out = []
    for _, row in table.iterrows():
        name = baseline if isinstance(baseline, str) else baseline.get(row["variant"])
        if name not in by_variant:
            out.append(np.nan)
            continue
        base = table.iloc[by_variant[name]]
        ref = {m: float(base[m]) for m in METRICS}
        values = {m: float(row[m]) for m in METRICS}
        with np.errstate(divide="ignore", invalid="ignore"):
            vr = variability_reduction(values, ref)
        out.append(vr if np.isfinite(vr) else np.nan)
    return out


def onset_epoch(spec: dict) -> int:
    """The epoch from which a run's sources vary: its ``init_from.epoch`` (0 for a run trained from scratch)."""
    init = (spec or {}).get("init_from") or {}
    return int(init.get("epoch", 0))


# ---- linear CKA per layer across a variant's runs (seed 002 Fig. 5.1) -------------------------------

CKA_MODELS = 25  # the seed averages CKA over the pairs of 25 models per source (cost: R · n² per layer)


def cka_table(store: Any, runs: pd.DataFrame, index: pd.DataFrame, split: str = "test", models: int = CKA_MODELS
              ) -> pd.DataFrame:
    """Per variant and layer: mean linear CKA (biased and debiased) over the pairs of its first ``models`` runs.

    From the ``activations`` evaluator's files at each run's latest epoch (found in the store's artifact
    ``index``); errors: jackknife over runs.
    """
    from ablab.analysis.variability import cka_matrix, jackknife_pair_error, mean_over_pairs
    from ablab.artifacts import ACTIVATIONS_KIND, load_npz

    rows = []
    arts = index[(index["kind"] == ACTIVATIONS_KIND) & (index["split"] == split)]
    for label, group in runs.groupby("label", sort=False):
        group = group[group["status"].isin(USED_STATUSES)]
        stored = []
        for run in group["run"]:
            mine = arts[arts["run"] == run].sort_values("epoch")
            if len(mine) and len(stored) < models:
                stored.append(load_npz(store.read_artifact(run, mine.iloc[-1]["name"]))[0])
        layers = [name for name in (stored[0] if stored else {}) if all(name in s for s in stored)]
        for layer in layers:
            features = [s[layer] for s in stored]
            row = {"variant": label, "layer": layer, "n": len(features), "examples": len(features[0])}
            if len(features) >= 2 and all(np.isfinite(f).all() for f in features):
                for form, debiased in (("cka", False), ("cka_debiased", True)):
                    matrix = cka_matrix(features, debiased)
                    row[form], row[f"{form}_err"] = mean_over_pairs(matrix), jackknife_pair_error(matrix)
            rows.append(row)
    columns = ["variant", "layer", "n", "examples", "cka", "cka_err", "cka_debiased", "cka_debiased_err"]
    return pd.DataFrame(rows).reindex(columns=columns)
