"""Hyperparameter grids as tables: mean over repeats per cell, the best cell, the best configurations.

Inputs are one value per run (``analysis.seeds.select_final``) and the store's ``runs`` frame,
whose ``axes`` column maps each varied axis path (``optimizer.lr``, ``sam``) to the run's value.
As in the final table, only finished runs (status ``done``) with a finite value enter a mean;
diverged and failed runs are counted per cell. Cells, rows and columns keep the study's order.
Writing these frames as CSV, Markdown or LaTeX is the report's job (``ablab.report.grid_tables``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ablab.analysis.seeds import RUN_COLUMNS, higher_is_better
from ablab.errors import SpecError
from ablab.labels import label_value
from ablab.selectors import matches

MISSING = "—"


# ---- axis values as labels ---------------------------------------------------------------------

def axis_label(value: Any) -> str:
    """A readable label for an axis value: ``3e-05``, ``adam``, ``none`` (null), ``rho=0.05`` (a mapping)."""
    if value is None:
        return "none"
    if isinstance(value, dict) and "name" not in value:
        return ", ".join(f"{k}={axis_label(v)}" for k, v in value.items()) or "{}"
    return label_value(value)


def varied_axes(runs: pd.DataFrame) -> list[str]:
    """The axis paths the study varies, in the order its runs name them (``label`` left out)."""
    names: dict[str, None] = {}
    for axes in runs["axes"]:
        names.update(dict.fromkeys(k for k in (axes or {}) if k != "label"))
    return list(names)


def axes_in_study_order(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``runs`` with each run's axes in the study's ``order`` (``Study.axes``; the store sorts them by name)."""
    rank = {k: i for i, k in enumerate(order)}
    axes = [dict(sorted((a or {}).items(), key=lambda kv: rank.get(kv[0], len(rank)))) for a in runs["axes"]]
    return runs.assign(axes=axes)


def _axis_frame(runs: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """run → one label column per axis (— where a run has no value for it)."""
    rows = [{"run": r, **{a: axis_label(ax[a]) if a in (ax or {}) else MISSING for a in axes}}
            for r, ax in zip(runs["run"], runs["axes"])]
    return pd.DataFrame(rows, columns=["run", *axes])


def _check_metric(per_run: pd.DataFrame, metric: str, where: str) -> None:
    if metric not in per_run.columns:
        known = [c for c in per_run.columns if c not in RUN_COLUMNS]
        raise SpecError(f"{metric!r} was not recorded; recorded metrics: {', '.join(known) or 'none'}", field=where)


def _values(group: pd.DataFrame, metric: str) -> np.ndarray:
    done = group.loc[group["status"] == "done", metric].to_numpy(dtype=float)
    return done[np.isfinite(done)]


# ---- heatmap tables ----------------------------------------------------------------------------

@dataclass
class FacetTable:
    """One facet of a grid: mean, SD (ddof=1) and n of ``metric`` per (row value, column value)."""

    rows: str
    cols: str
    metric: str
    facet: dict[str, str]  # facet axis → value label; empty when the grid has no other axis
    mean: pd.DataFrame
    sd: pd.DataFrame
    n: pd.DataFrame
    n_bad: pd.DataFrame  # diverged or failed runs per cell
    higher_is_better: bool
    best: tuple[str, str] | None = None  # (row label, column label) of the best finite mean

    @property
    def title(self) -> str:
        where = ", ".join(f"{k} = {v}" for k, v in self.facet.items())
        return f"{self.metric}: {self.rows} × {self.cols}" + (f" ({where})" if where else "")


def grid_table(
    per_run: pd.DataFrame,
    runs: pd.DataFrame,
    rows: str,
    cols: str,
    metric: str,
    facets: list[str] | None = None,
    directions: dict[str, str] | None = None,
) -> list[FacetTable]:
    """One pivot (rows × cols) of the mean ``metric`` over repeats per facet combination.

    ``facets`` None: every varied axis other than ``rows`` and ``cols``. The best cell of each
    facet is the highest or lowest mean as the metric's evaluator declared (``higher_is_better``).
    """
    axes = varied_axes(runs)
    for name, what in [(rows, "rows"), (cols, "cols"), *((f, "facets") for f in facets or [])]:
        if name not in axes:
            raise SpecError(f"'{name}' is not a varied axis; the study varies {', '.join(axes) or 'nothing'}",
                            field=what)
    _check_metric(per_run, metric, "metric")
    facets = [a for a in axes if a not in (rows, cols)] if facets is None else list(facets)
    frame = per_run[["run", "status", metric]].merge(_axis_frame(runs, axes), on="run")
    row_order, col_order = list(pd.unique(frame[rows])), list(pd.unique(frame[cols]))
    up = higher_is_better(metric, directions)
    out = []
    groups = frame.groupby(facets, sort=False) if facets else [((), frame)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        mean, sd, n, bad = (pd.DataFrame(index=pd.Index(row_order, name=rows), columns=pd.Index(col_order, name=cols),
                                         dtype=float) for _ in range(4))
        for (r, c), cell in part.groupby([rows, cols], sort=False):
            values = _values(cell, metric)
            mean.loc[r, c] = values.mean() if len(values) else np.nan
            sd.loc[r, c] = values.std(ddof=1) if len(values) > 1 else np.nan
            n.loc[r, c] = len(values)
            bad.loc[r, c] = int(cell["status"].isin(("diverged", "failed")).sum())
        table = FacetTable(rows, cols, metric, dict(zip(facets, key)), mean, sd,
                           n.fillna(0).astype(int), bad.fillna(0).astype(int), up)
        table.best = _best_cell(mean, up)
        out.append(table)
    return out


def _best_cell(mean: pd.DataFrame, up: bool) -> tuple[str, str] | None:
    stacked = mean.stack().astype(float)
    stacked = stacked[np.isfinite(stacked.to_numpy())]
    if stacked.empty:
        return None
    r, c = stacked.idxmax() if up else stacked.idxmin()
    return str(r), str(c)


# ---- best configurations -----------------------------------------------------------------------

@dataclass
class Comparison:
    """Welch's t-test of the best variant's runs against another variant's runs."""

    against: str
    t: float
    p: float
    n: tuple[int, int]
    delta: float  # mean of the best minus mean of the other


@dataclass
class BestConfigurations:
    """Every variant ranked by ``metric`` (mean ± SD over repeats), the top ``k``, the best one's tests."""

    metric: str
    higher_is_better: bool
    ranking: pd.DataFrame  # rank, label, one column per axis, mean, sd, n, n_bad; finite means only
    k: int
    runner_up: Comparison | None = None
    baseline: Comparison | None = None
    baseline_label: str | None = None
    best_is_baseline: bool = False  # then ``baseline`` tests the best against the best non-baseline variant
    note: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """The top ``k`` rows of the ranking."""
        return self.ranking.head(self.k).reset_index(drop=True)

    @property
    def axes(self) -> list[str]:
        return [c for c in self.ranking.columns if c not in ("rank", "label", "mean", "sd", "n", "n_bad")]


def welch_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Welch's two-sample t-test (unequal variances): (t, two-sided p); NaN with fewer than 2 values a side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    from scipy import stats  # here, not at import: `import ablab` (every worker) need not load scipy.stats

    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def best_configurations(
    per_run: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str,
    k: int = 5,
    baseline: dict[str, Any] | None = None,
    directions: dict[str, str] | None = None,
) -> BestConfigurations:
    """The k best variants by mean ``metric``, the best tested against the runner-up and the baseline.

    The baseline is the best variant whose axis values (or, for paths that are not axes, whose
    resolved spec) match every item of ``baseline``, e.g. ``{"sam": None}``; when that is the best
    variant itself, it is tested against the best variant that does not match. Tests are Welch's
    t-tests (``scipy.stats.ttest_ind(equal_var=False)``) on the per-run values, two-sided.
    """
    _check_metric(per_run, metric, "metric")
    axes = varied_axes(runs)
    up = higher_is_better(metric, directions)
    frame = per_run[["run", "label", "status", metric]].merge(_axis_frame(runs, axes), on="run")
    rows, samples = [], {}
    for label, group in frame.groupby("label", sort=False):
        values = _values(group, metric)
        samples[label] = values
        rows.append({"label": label, **{a: group[a].iloc[0] for a in axes},
                     "mean": values.mean() if len(values) else np.nan,
                     "sd": values.std(ddof=1) if len(values) > 1 else np.nan, "n": len(values),
                     "n_bad": int(group["status"].isin(("diverged", "failed")).sum())})
    ranked = pd.DataFrame(rows, columns=["label", *axes, "mean", "sd", "n", "n_bad"])
    ranked = ranked[np.isfinite(ranked["mean"].to_numpy(dtype=float))]
    ranked = ranked.sort_values("mean", ascending=not up, kind="stable").reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    result = BestConfigurations(metric, up, ranked, k)
    if ranked.empty:
        result.note.append(f"no finished run has a finite {metric}")
        return result
    best = ranked["label"].iloc[0]
    if len(ranked) > 1:
        result.runner_up = _compare(best, ranked["label"].iloc[1], samples, ranked)
    if baseline is not None:
        matching = _matching_labels(runs, baseline)
        candidates = ranked[ranked["label"].isin(matching)]
        if candidates.empty:
            result.note.append(f"no variant with a finite {metric} matches the baseline {_describe(baseline)}")
        else:
            result.baseline_label = str(candidates["label"].iloc[0])
            if result.baseline_label == best:
                result.best_is_baseline = True
                result.note.append("the best variant matches the baseline; its baseline test is against the "
                                   "best variant that does not")
                others = ranked[~ranked["label"].isin(matching)]
                if not others.empty:
                    result.baseline = _compare(best, others["label"].iloc[0], samples, ranked)
            else:
                result.baseline = _compare(best, result.baseline_label, samples, ranked)
    return result


def _compare(best: str, other: str, samples: dict[str, np.ndarray], ranked: pd.DataFrame) -> Comparison:
    t, p = welch_test(samples[best], samples[other])
    means = ranked.set_index("label")["mean"]
    return Comparison(str(other), t, p, (len(samples[best]), len(samples[other])),
                      float(means[best] - means[other]))


def _matching_labels(runs: pd.DataFrame, baseline: dict[str, Any]) -> set[str]:
    reps = runs["replicate"] if "replicate" in runs else [0] * len(runs)
    return {label for label, axes, spec, rep in zip(runs["label"], runs["axes"], runs["spec"], reps)
            if matches(baseline, axes=axes or {}, spec=spec or {}, label=label, replicate=rep)}


def _describe(values: dict[str, Any]) -> str:
    return json.dumps(values, default=str)
