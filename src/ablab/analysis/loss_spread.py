"""Per-epoch spread of the loss across a variant's replicates (seed 002 Fig. B.1), from the stored metrics.

For each variant whose runs all changed a bit (``info["bitflip"]``) and each loss series, at each
epoch e, over the n runs with a value there:

    range_e = max_r L_r(e) − min_r L_r(e),    SD_e = √(mean_r (L_r(e) − L̄(e))²)   (ddof = 0)

Series: ``train``, the mean of the run's recorded training-batch losses of epoch e (split ``batch``:
each record is the mean over the steps since the previous one, so with ``every_steps`` dividing the
epoch this is the epoch's mean training loss); and each evaluated split (``train``, ``val``, ``test``)
at its evaluation epochs. The seed draws the middle-95 % range of 100 runs; this is the full range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablab.analysis.variability import sd

USED_STATUSES = ("done", "diverged")
LOSS = "loss"
BATCH = "batch"
SERIES = (("train (batches)", BATCH), ("train", "train"), ("val", "val"), ("test", "test"))
"""(series name in the table, split in the store), in the order they are shown."""
COLUMNS = ["variant", "series", "epoch", "n", "mean", "range", "sd"]


def bitflip_variants(runs: pd.DataFrame) -> list[str]:
    """Labels (study order) of the variants with ≥ 2 usable runs, every one of which changed a bit."""
    labels = []
    for label, group in runs.groupby("label", sort=False):
        group = group[group["status"].isin(USED_STATUSES)]
        if len(group) >= 2 and all(isinstance(info, dict) and info.get("bitflip") for info in group["info"]):
            labels.append(str(label))
    return labels


def loss_spread(metrics: pd.DataFrame, runs: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per (variant, series, epoch): n runs, mean, range (max − min) and SD (ddof 0) of the loss."""
    losses = metrics[metrics["name"] == LOSS]
    rows = []
    for label in labels:
        members = runs[(runs["label"] == label) & runs["status"].isin(USED_STATUSES)]["run"]
        mine = losses[losses["run"].isin(set(members))]
        for series, split in SERIES:
            per_run = _per_epoch(mine[mine["split"] == split], split)
            for epoch, values in per_run.groupby("epoch", sort=True)["value"]:
                rows.append(_row(label, series, int(epoch), values.to_numpy(dtype=float)))
    return pd.DataFrame(rows, columns=COLUMNS)


def _per_epoch(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """(run, epoch, value): the mean of an epoch's batch records, or an evaluation's last value at its epoch."""
    if frame.empty:
        return frame[["run", "epoch", "value"]]
    grouped = frame.groupby(["run", "epoch"], sort=False)["value"]
    values = grouped.mean() if split == BATCH else grouped.last()
    return values.reset_index()


def _row(label: str, series: str, epoch: int, values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    spread = finite.max() - finite.min() if len(finite) == len(values) and len(values) else np.nan
    return {"variant": label, "series": series, "epoch": epoch, "n": len(values), "mean": float(np.mean(values)),
            "range": float(spread), "sd": sd(values) if np.isfinite(values).all() else np.nan}
