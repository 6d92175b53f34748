"""Statistics over seed replicates: pick one value per run, then mean ± SD per variant.

Inputs are the store's frames: ``runs`` (one row per run: run, label, replicate, status)
and the long ``metrics`` frame (run, step, epoch, split, name, value). Per-epoch
evaluations are every split except ``batch``; a metric reference is ``"split.name"``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablab.errors import SpecError

RUN_COLUMNS = ("run", "label", "replicate", "status", "epoch")  # per_run columns that are not metrics
BATCH_SPLIT = "batch"  # running training metrics every k steps; x axis is the step
SPLIT_ORDER = ("train", "val", "test")
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "nll", "error", "err")


def higher_is_better(metric: str, directions: dict[str, str] | None = None) -> bool:
    """Is a higher ``metric`` (``split.name``) better? As its evaluator declared it (``directions``: name ->
    ``min``/``max``, ``Store.directions()``); only for a store without declarations, from the name
    (loss/mse/mae/rmse/nll/error are minimised, the rest maximised)."""
    name = metric.rsplit(".", 1)[-1]
    if directions and name in directions:
        return directions[name] == "max"
    name = name.lower()
    return not any(name == word or name.endswith(f"_{word}") for word in _LOWER_IS_BETTER)


def describe_selection(selection: str, select_on: str | None, directions: dict[str, str] | None = None) -> str:
    """The selection rule in words, as the report tables state it."""
    if selection == "final":
        return "final epoch"
    if selection == "best":
        direction = "highest" if higher_is_better(select_on, directions) else "lowest"
        return f"epoch with best {select_on} ({direction})"
    raise ValueError(f"selection must be 'final' or 'best', got {selection!r}")


def evaluations(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch evaluation rows only, with a ``metric`` column ``"split.name"``."""
    evals = metrics[metrics["split"] != BATCH_SPLIT]
    return evals.assign(metric=evals["split"] + "." + evals["name"])


def select_final(
    metrics: pd.DataFrame, runs: pd.DataFrame, selection: str = "final", select_on: str | None = None,
    directions: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per run: every evaluated metric at the selected epoch, and that ``epoch``.

    final: the last evaluated epoch of the run (a diverged run: the epoch where it diverged).
    best: the epoch where ``select_on`` is best (in its declared direction), earliest on
    ties, finite values only; epoch 0 (before training) counts only for a run with no later one.
    Runs without metrics (failed, pending) get NaN values and a missing epoch.
    """
    evals = evaluations(metrics)
    if selection == "final":
        chosen = evals.groupby("run")["epoch"].max()
    elif selection == "best":
        chosen = _best_epochs(evals, select_on, directions)
    else:
        raise ValueError(f"selection must be 'final' or 'best', got {selection!r}")

    wide = evals.groupby(["run", "epoch", "metric"])["value"].last().unstack("metric")
    wide = wide.reindex(columns=_ordered_metrics(wide.columns))
    picked = wide.reindex(pd.MultiIndex.from_arrays([chosen.index, chosen.to_numpy()], names=["run", "epoch"]))
    picked = picked.reset_index()

    base = runs[["run", "label", "replicate", "status"]].reset_index(drop=True)
    out = base.merge(picked, on="run", how="left")
    out["epoch"] = out["epoch"].astype("Int64")
    return out


def aggregate(per_run: pd.DataFrame, by: str = "label") -> pd.DataFrame:
    """Per variant: ``<metric>.mean``, ``<metric>.sd`` (ddof=1; NaN when n=1), ``<metric>.n``, and run counts.

    Only finished runs (status ``done``) enter mean and SD; ``n`` counts them. Diverged and
    failed runs are counted in ``n_diverged`` and ``n_failed`` and never averaged.
    Variants keep their order of first appearance.
    """
    metric_cols = [c for c in per_run.columns if c not in RUN_COLUMNS and c != by]
    rows = []
    for key, group in per_run.groupby(by, sort=False):
        done = group[group["status"] == "done"]
        row = {
            by: key,
            "n": len(done),
            "n_diverged": int((group["status"] == "diverged").sum()),
            "n_failed": int((group["status"] == "failed").sum()),
        }
        for col in metric_cols:
            values = done[col].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            row[f"{col}.mean"] = values.mean() if len(values) else np.nan
            row[f"{col}.sd"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{col}.n"] = len(values)
        rows.append(row)
    columns = [by, "n", "n_diverged", "n_failed"] + [f"{c}.{s}" for c in metric_cols for s in ("mean", "sd", "n")]
    return pd.DataFrame(rows, columns=columns)


def curves(
    metrics: pd.DataFrame, runs: pd.DataFrame, split: str, name: str, *, include_diverged: bool = False
) -> pd.DataFrame:
    """Per label and epoch (``step`` for the batch split): mean, sd (ddof=1) and n over seeds.

    A run contributes only where its value is finite. By default only finished runs enter,
    as in the final table; ``include_diverged`` adds diverged runs up to where they stop.
    """
    x = x_axis(split)
    statuses = ("done", "diverged") if include_diverged else ("done",)
    chosen = runs.loc[runs["status"].isin(statuses), ["run", "label"]]
    rows = metrics[(metrics["split"] == split) & (metrics["name"] == name)]
    rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))].merge(chosen, on="run")
    per_run = rows.groupby(["label", "run", x], sort=False)["value"].last().reset_index()
    stats = per_run.groupby(["label", x], sort=False)["value"].agg(mean="mean", sd="std", n="count").reset_index()
    order = {label: i for i, label in enumerate(pd.unique(runs["label"]))}
    stats = stats.assign(_order=stats["label"].map(order)).sort_values(["_order", x], kind="stable")
    return stats.drop(columns="_order").reset_index(drop=True)


def run_curves(
    metrics: pd.DataFrame, runs: pd.DataFrame, split: str, name: str, *, statuses: tuple[str, ...] = ("diverged",)
) -> pd.DataFrame:
    """Each run's own curve (run, label, replicate, x, value), non-finite values kept."""
    x = x_axis(split)
    chosen = runs.loc[runs["status"].isin(statuses), ["run", "label", "replicate"]]
    rows = metrics[(metrics["split"] == split) & (metrics["name"] == name)].merge(chosen, on="run")
    return rows[["run", "label", "replicate", x, "value"]].sort_values(["run", x], kind="stable").reset_index(drop=True)


def ci_halfwidth(sd, n, level: float = 0.95) -> np.ndarray:
    """Half-width of the t-based confidence interval of a mean over ``n`` seeds; NaN where n < 2.

    half = t_{(1+level)/2, n−1} · sd / √n (sd with ddof=1): Student's t interval for the mean of n
    independent runs. At n = 2, t = 12.7, so two seeds give a wide band — as they should.
    """
    from scipy import stats  # here, not at import: `import ablab` (every worker) need not load scipy.stats

    sd, n = np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)


def x_axis(split: str) -> str:
    """Column a split's curves run along: ``step`` for running batch metrics, ``epoch`` otherwise."""
    return "step" if split == BATCH_SPLIT else "epoch"


def _best_epochs(evals: pd.DataFrame, select_on: str | None, directions: dict[str, str] | None = None) -> pd.Series:
    if select_on is None:
        raise ValueError("selection 'best' needs select_on, e.g. 'val.accuracy'")
    if len(evals) and not (evals["metric"] == select_on).any():
        known = ", ".join(_ordered_metrics(evals["metric"].unique()))
        raise SpecError(f"{select_on!r} was never recorded; recorded metrics: {known}", field="report.select_on")
    sel = evals[(evals["metric"] == select_on) & np.isfinite(evals["value"].to_numpy(dtype=float))]
    trained = sel[sel["epoch"] > 0]
    sel = pd.concat([trained, sel[~sel["run"].isin(trained["run"])]]).sort_values(["run", "epoch"], kind="stable")
    if sel.empty:
        return pd.Series([], dtype="int64", index=pd.Index([], name="run"), name="epoch")
    grouped = sel.groupby("run")["value"]
    best_rows = grouped.idxmax() if higher_is_better(select_on, directions) else grouped.idxmin()
    return sel.loc[best_rows.to_numpy()].set_index("run")["epoch"]


def _ordered_metrics(refs) -> list[str]:
    """train, val, test first (in that order), then other splits; names alphabetical within a split."""

    def key(ref: str):
        split, _, name = ref.partition(".")
        rank = SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER)
        return (rank, split, name)

    return sorted(refs, key=key)
