"""The final-metrics table: mean ± SD over seeds per variant, as CSV, Markdown and terminal text.

With ``report.baselines`` (role → variant, e.g. ``{lower: vanilla, upper: bn_gamma_beta}``) every
metric also gets, per role, the difference of each variant's mean to its baseline's mean and the
p-value of Welch's t-test (``add_baseline_deltas``). A baseline names a variant label, or the first
part of labels (before the first top-level ", "): then each variant is compared with the member of
that family that shares the rest of its label, e.g. ``bn_gamma, lr_scale=10`` with
``vanilla, lr_scale=10`` (Dissecting BatchNorm, §3.2.1: vanilla and BN_γβ as lower and upper
baselines at every learning rate).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ablab.analysis.grids import welch_test
from ablab.report.grid_tables import format_p
from ablab.report.markdown import escape_markdown, markdown_row  # noqa: F401  (escape_markdown re-exported)

MISSING = "—"
BASELINE_ROLES = ("lower", "upper")


def caption(rule: str, agg: pd.DataFrame | None = None) -> str:
    """What the table shows and how the numbers were selected; with baselines, what Δ and p are."""
    text = (
        f"Selection: {rule}. Values are mean ± SD over the n finished seeds (SD with ddof=1); "
        "diverged and failed runs are counted but excluded from mean and SD."
    )
    names = _baseline_names(agg) if agg is not None else {}
    if names:
        named = "; ".join(f"{role}: {name}" for role, name in names.items())
        text += (
            f" Δ vs a baseline ({named}): the variant's mean minus the baseline's mean, the baseline "
            "taken from the variant's own group (the rest of its label, e.g. the same lr_scale); p: "
            "two-sided Welch's t-test on the per-run values when both have n ≥ 2."
        )
        for role in agg.attrs.get("baselines_unmatched", []):
            text += f" report.baselines.{role} ({names[role]!r}) names no variant and no family of variants."
    return text


# ---- baselines: Δ to the lower and upper baseline per metric ----------------------------------

def split_label(label: str) -> tuple[str, str]:
    """``"bn_gamma, lr_scale=10"`` → ``("bn_gamma", "lr_scale=10")``: split at the first ", " outside brackets."""
    depth = 0
    for i, ch in enumerate(label):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and label.startswith(", ", i):
            return label[:i], label[i + 2:]
    return label, ""


def names_a_family(name: str, labels: list[str]) -> bool:
    """True when ``name`` is no label itself but the first part of some labels (a family of variants)."""
    return name not in labels and any(split_label(label)[0] == name for label in labels)


def resolve_baselines(labels: list[str], baselines: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """Per label and role, the baseline variant it is compared with (None: no such variant)."""
    labels = list(dict.fromkeys(labels))
    known = set(labels)
    out: dict[str, dict[str, str | None]] = {}
    for label in labels:
        group = split_label(label)[1]
        out[label] = {}
        for role, name in baselines.items():
            in_group = f"{name}, {group}" if group else name
            out[label][role] = in_group if in_group in known else (name if name in known else None)
    return out


def add_baseline_deltas(
    agg: pd.DataFrame, per_run: pd.DataFrame, refs: list[str], baselines: dict[str, str], by: str = "label"
) -> pd.DataFrame:
    """``agg`` plus, per role, ``baseline_<role>`` and per metric ``<ref>.delta_<role>``, ``<ref>.p_<role>``.

    Δ = mean(variant) − mean(baseline) over finished runs with a finite value; p from Welch's
    t-test (scipy ``ttest_ind(equal_var=False)``, two-sided), NaN unless both sides have n ≥ 2.
    """
    roles = [r for r in BASELINE_ROLES if r in baselines] + [r for r in baselines if r not in BASELINE_ROLES]
    if not roles or agg.empty:
        return agg
    labels = [str(label) for label in agg[by]]
    resolved = resolve_baselines(labels, {r: baselines[r] for r in roles})
    done = per_run[per_run["status"] == "done"]
    samples = {
        (label, ref): _finite(done.loc[done[by] == label, ref]) if ref in done else np.array([])
        for label in labels for ref in refs
    }
    out = agg.copy()
    for role in roles:
        out[f"baseline_{role}"] = [resolved[label][role] for label in labels]
        for ref in refs:
            deltas, ps = [], []
            for label in labels:
                base = resolved[label][role]
                a = samples[(label, ref)]
                b = samples.get((base, ref), np.array([])) if base is not None else np.array([])
                deltas.append(a.mean() - b.mean() if len(a) and len(b) else np.nan)
                with warnings.catch_warnings():  # equal constant samples: p is NaN, not an error
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ps.append(welch_test(a, b)[1] if base != label else np.nan)
            out[f"{ref}.delta_{role}"], out[f"{ref}.p_{role}"] = deltas, ps
    out.attrs["baselines"] = {r: baselines[r] for r in roles}
    out.attrs["baselines_unmatched"] = [r for r in roles if all(resolved[label][r] is None for label in labels)]
    return out


def format_delta(delta: float, p: float, is_baseline: bool = False) -> str:
    """``+0.0123 (p=0.041)``; ``baseline`` for the baseline itself; — when there is nothing to compare."""
    if is_baseline:
        return "baseline"
    if not _is_number(delta):
        return MISSING
    text = f"{float(delta):+.3g}"
    return f"{text} (p={format_p(p)})" if _is_number(p) else text


def _baseline_roles(agg: pd.DataFrame) -> list[str]:
    return [c[len("baseline_"):] for c in agg.columns if str(c).startswith("baseline_")]


def _baseline_names(agg: pd.DataFrame) -> dict[str, str]:
    names = agg.attrs.get("baselines") or {}
    return {role: names.get(role, role) for role in _baseline_roles(agg)}


def _finite(values: pd.Series) -> np.ndarray:
    values = values.to_numpy(dtype=float)
    return values[np.isfinite(values)]


def format_mean_sd(mean: float, sd: float, n_values: int, n: int) -> str:
    """``0.951 ± 0.031``: SD to two significant digits, the mean to the same decimal place.

    SD shows as — with fewer than two values; ``(n=k)`` follows when only k of n runs have the value.
    """
    if not _is_number(mean):
        return MISSING
    text = _mean_sd(float(mean), float(sd)) if _is_number(sd) else f"{_num(mean)} ± {MISSING}"
    return text if n_values == n else f"{text} (n={n_values})"


def _mean_sd(mean: float, sd: float) -> str:
    if sd == 0:
        return f"{_num(mean)} ± 0"
    scale = max(abs(mean), sd)
    if scale >= 1e6 or scale < 1e-3:
        return f"{mean:.3e} ± {sd:.1e}"
    decimals = min(max(0, 1 - math.floor(math.log10(sd))), 8)
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def table_rows(agg: pd.DataFrame, refs: list[str], by: str = "label") -> tuple[list[str], list[list[str]]]:
    """Header and string cells: variant, per metric its mean ± SD (then Δ per baseline), n, diverged, failed."""
    roles = _baseline_roles(agg)
    header = ["variant"]
    for ref in refs:
        header += [ref, *(f"Δ vs {role}" for role in roles if f"{ref}.delta_{role}" in agg)]
    header += ["n", "diverged", "failed"]
    rows = []
    for _, row in agg.iterrows():
        cells = [str(row[by])]
        for ref in refs:
            cells.append(format_mean_sd(row[f"{ref}.mean"], row[f"{ref}.sd"], int(row[f"{ref}.n"]), int(row["n"])))
            for role in roles:
                if f"{ref}.delta_{role}" in agg:
                    cells.append(format_delta(row[f"{ref}.delta_{role}"], row[f"{ref}.p_{role}"],
                                              row[f"baseline_{role}"] == row[by]))
        cells += [str(int(row["n"])), str(int(row["n_diverged"])), str(int(row["n_failed"]))]
        rows.append(cells)
    return header, rows


def to_text(agg: pd.DataFrame, refs: list[str], rule: str) -> str:
    """Fixed-width table for the terminal, preceded by its caption."""
    header, rows = table_rows(agg, refs)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    lines = [line(r) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return caption(rule, agg) + "\n\n" + "\n".join(lines) + "\n"


def to_markdown(agg: pd.DataFrame, refs: list[str], rule: str) -> str:
    """GitHub Markdown table, preceded by its caption; labels and names from the spec are shown literally."""
    header, rows = table_rows(agg, refs)

    body = [markdown_row(header), "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|", *map(markdown_row, rows)]
    return escape_markdown(caption(rule, agg)) + "\n\n" + "\n".join(body) + "\n"


def to_csv_frame(agg: pd.DataFrame, refs: list[str], rule: str, by: str = "label") -> pd.DataFrame:
    """The numbers behind the table: counts, then mean, sd, n per metric, and the selection rule."""
    columns = [by, "n", "n_diverged", "n_failed"] + [f"{r}.{s}" for r in refs for s in ("mean", "sd", "n")]
    roles = _baseline_roles(agg)
    columns += [f"baseline_{role}" for role in roles]
    columns += [f"{r}.{s}_{role}" for r in refs for role in roles for s in ("delta", "p") if f"{r}.delta_{role}" in agg]
    return agg[columns].assign(selection=rule)


def _is_number(x) -> bool:
    return x is not None and not pd.isna(x) and math.isfinite(float(x))


def _num(x: float) -> str:
    return f"{float(x):.4g}"
