"""The final-metrics table: mean ± SD over seeds per variant, as CSV, Markdown and terminal text.

Each column is rounded to one precision set by its standard errors (``ablab.report.numbers``); the CSV
keeps the numbers exact. The page shows per metric one cell (mean ± SD, then Δ and p per baseline, the
whole test in a hover); the terminal's table fits ``CONSOLE_WIDTH`` columns (``to_text``).

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
from ablab.analysis.multiple_tests import holm_adjust
from ablab.labels import plural
from ablab.report import numbers
from ablab.report.numbers import MISSING, format_p, format_value, is_number, is_scientific
from ablab.report.markdown import escape_markdown, markdown_row  # noqa: F401  (escape_markdown re-exported)
BASELINE_ROLES = ("lower", "upper")


def caption(rule: str, agg: pd.DataFrame | None = None) -> str:
    """What the table shows and how the numbers were selected; with baselines, what Δ and p are."""
    text = (
        f"Selection: {rule}. Values are mean ± SD over the n finished seeds (SD with ddof=1), each column "
        "rounded to one decimal place: the second significant digit of its median standard error SD/√n "
        "(an SD below it reads <0.001 etc.); diverged and failed runs are counted but excluded from mean and SD."
    )
    names = _baseline_names(agg) if agg is not None else {}
    if names:
        named = "; ".join(f"{role}: {name}" for role, name in names.items())
        tests = int(agg.attrs.get("tests", 0))
        text += (
            f" Δ vs a baseline ({named}): the variant's mean minus the baseline's mean, the baseline "
            "taken from the variant's own group (the same values of the axes the baseline does not name; for "
            "a family of labels, the rest of its label, e.g. the same lr_scale); p: "
            "two-sided Welch's t-test on the per-run values when both have n ≥ 2, with the numbers of "
            f"runs compared (n = variant vs baseline); Holm: the p-value Holm–Bonferroni-adjusted over all "
            f"{plural(tests, 'test')} of this table."
        )
        for role in agg.attrs.get("baselines_unmatched", []):
            why = agg.attrs.get("baselines_problems", {}).get(role)
            text += (f" report.baselines.{role} ({names[role]!r}) compares nothing: {why}." if why else
                     f" report.baselines.{role} ({names[role]!r}) names no variant and no family of variants.")
        for role, labels in agg.attrs.get("baselines_partial", {}).items():
            shown = ", ".join(f"'{lb}'" for lb in labels[:6]) + (f", … ({len(labels)} in all)" if len(labels) > 6 else "")
            text += (f" No {role} baseline ({names[role]!r}) with the same other settings for {shown} (Δ: —).")
    return text


# ---- baselines: Δ to the lower and upper baseline per metric ----------------------------------

def packing_note(runs: pd.DataFrame) -> str:
    """One sentence when ``runs`` mix runs trained packed (``info["packed"]``, docs/packing.md) and runs trained one
    per process; empty otherwise."""
    if "info" not in runs or not len(runs):
        return ""
    packed = int(sum(isinstance(i, dict) and "packed" in i for i in runs["info"]))
    if packed in (0, len(runs)):
        return ""
    return (f"This table mixes packed and unpacked runs: {packed} of {len(runs)} runs were trained packed (several "
            f"seeds in one process, execute.pack), {len(runs) - packed} one per process. Packed runs equal the runs "
            "alone bitwise on the CPU at one thread per run; at more threads or on CUDA they agree to the last bits "
            "only (docs/packing.md).")


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
    agg: pd.DataFrame, per_run: pd.DataFrame, refs: list[str], baselines: dict[str, str], by: str = "label",
    pairs: dict[str, dict[str, str | None]] | None = None,
) -> pd.DataFrame:
    """``agg`` plus, per role, ``baseline_<role>`` and per metric ``<ref>.<x>_<role>`` for x in delta,
    se_delta, p, p_holm, n_baseline.

    ``baselines``: role → the name the table shows; ``pairs``: role → label → its baseline label
    (``ablab.report.baselines.baseline_pairs``); without them the names are labels or families
    (``resolve_baselines``).

    Δ = mean(variant) − mean(baseline) over finished runs with a finite value, its standard error
    √(s_a²/n_a + s_b²/n_b); p from Welch's t-test (scipy ``ttest_ind(equal_var=False)``, two-sided),
    NaN unless both sides have n ≥ 2; p_holm: p Holm–Bonferroni-adjusted over every test of the table.
    """
    roles = [r for r in BASELINE_ROLES if r in baselines] + [r for r in baselines if r not in BASELINE_ROLES]
    if not roles or agg.empty:
        return agg
    labels = [str(label) for label in agg[by]]
    if pairs is None:
        resolved = resolve_baselines(labels, {r: baselines[r] for r in roles})
    else:
        resolved = {label: {r: pairs[r].get(label) for r in roles} for label in labels}
    done = per_run[per_run["status"] == "done"]
    samples = {
        (label, ref): _finite(done.loc[done[by] == label, ref]) if ref in done else np.array([])
        for label in labels for ref in refs
    }
    out = agg.copy()
    for role in roles:
        out[f"baseline_{role}"] = [resolved[label][role] for label in labels]
        for ref in refs:
            columns = [_compare(samples[(label, ref)], samples.get((resolved[label][role], ref), np.array([])),
                                resolved[label][role] == label) for label in labels]
            for name, values in zip(("delta", "se_delta", "p", "n_baseline"), zip(*columns)):
                out[f"{ref}.{name}_{role}"] = values
    p_columns = [f"{ref}.p_{role}" for role in roles for ref in refs]
    adjusted = holm_adjust(out[p_columns].to_numpy(dtype=float)).reshape(len(out), len(p_columns))
    for i, column in enumerate(p_columns):
        out[column.replace(".p_", ".p_holm_")] = adjusted[:, i]
    out.attrs["tests"] = int(np.isfinite(adjusted).sum())
    out.attrs["baselines"] = {r: baselines[r] for r in roles}
    out.attrs["baselines_unmatched"] = [r for r in roles if all(resolved[label][r] is None for label in labels)]
    out.attrs["baselines_partial"] = {r: [lb for lb in labels if resolved[lb][r] is None] for r in roles
                                      if r not in out.attrs["baselines_unmatched"]
                                      and any(resolved[lb][r] is None for lb in labels)}
    return out


def _compare(a: np.ndarray, b: np.ndarray, itself: bool) -> tuple[float, float, float, int]:
    """(Δ of means, its standard error, Welch p, n of the baseline) of samples ``a`` vs baseline ``b``.

    The baseline against itself (``itself``) gets Δ = 0 and no test."""
    delta = a.mean() - b.mean() if len(a) and len(b) else np.nan
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if len(a) > 1 and len(b) > 1 else np.nan
    with warnings.catch_warnings():  # equal constant samples: p is NaN, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        p = welch_test(a, b)[1] if not itself else np.nan
    return delta, se, p, len(b)


def format_delta(row: pd.Series, ref: str, role: str, scientific: bool = False,
                 column: numbers.Column | None = None) -> str:
    """``+0.012 (p=0.041, Holm 0.33; n=3 vs 3)``; ``baseline`` for the baseline itself; — when nothing compares.

    Δ is rounded by its standard error (``ablab.report.numbers``), or to its column's precision (``column``).
    """
    if row[f"baseline_{role}"] == row["label"]:
        return "baseline"
    delta = row[f"{ref}.delta_{role}"]
    if not is_number(delta):
        return MISSING
    text = format_value(delta, row[f"{ref}.se_delta_{role}"], scientific=scientific, sign=True, column=column)
    n = f"n={int(row[f'{ref}.n'])} vs {int(row[f'{ref}.n_baseline_{role}'])}"
    p = row[f"{ref}.p_{role}"]
    if not is_number(p):
        return f"{text} ({n})"
    return f"{text} (p={format_p(p)}, Holm {format_p(row[f'{ref}.p_holm_{role}'])}; {n})"


def delta_brief(row: pd.Series, ref: str, role: str, column: numbers.Column | None = None) -> tuple[str, str]:
    """(``+0.012 p=0.041``, the whole test in words for a hover): Δ and p at a glance, the rest on demand."""
    if row[f"baseline_{role}"] == row["label"]:
        return "baseline", f"this variant is the {role} baseline"
    delta = row[f"{ref}.delta_{role}"]
    if not is_number(delta):
        return MISSING, f"no {role} baseline with the same other settings"
    text = format_value(delta, row[f"{ref}.se_delta_{role}"], sign=True, column=column)
    n = f"n = {int(row[f'{ref}.n'])} vs {int(row[f'{ref}.n_baseline_{role}'])}"
    se = row[f"{ref}.se_delta_{role}"]
    detail = (f"Δ vs {role} ({row[f'baseline_{role}']}) = {text}"
              + (f", SE {format_value(se, se)}" if is_number(se) else ""))
    p = row[f"{ref}.p_{role}"]
    if not is_number(p):
        return text, f"{detail}; no Welch test (needs n ≥ 2 on both sides); {n}"
    holm = format_p(row[f"{ref}.p_holm_{role}"])
    return (f"{text} p={format_p(p)}",
            f"{detail}; Welch p = {format_p(p)}, Holm-adjusted p = {holm}; {n}")


def column_formats(agg: pd.DataFrame, refs: list[str]) -> dict:
    """One precision per column (``ablab.report.numbers.column_format``): per metric, and per (metric, role) Δ."""
    out: dict = {}
    for ref in refs:
        ses = [numbers.standard_error(sd, n) for sd, n in zip(agg[f"{ref}.sd"], agg[f"{ref}.n"])]
        out[ref] = numbers.column_format(agg[f"{ref}.mean"], ses, is_scientific(agg[f"{ref}.mean"]))
        for role in _baseline_roles(agg):
            if f"{ref}.delta_{role}" in agg:
                deltas = agg[f"{ref}.delta_{role}"]
                out[(ref, role)] = numbers.column_format(deltas, agg[f"{ref}.se_delta_{role}"], is_scientific(deltas))
    return out


def _baseline_roles(agg: pd.DataFrame) -> list[str]:
    return [c[len("baseline_"):] for c in agg.columns if str(c).startswith("baseline_")]


def _baseline_names(agg: pd.DataFrame) -> dict[str, str]:
    names = agg.attrs.get("baselines") or {}
    return {role: names.get(role, role) for role in _baseline_roles(agg)}


def _finite(values: pd.Series) -> np.ndarray:
    values = values.to_numpy(dtype=float)
    return values[np.isfinite(values)]


def format_mean_sd(mean: float, sd: float, n_values: int, n: int, scientific: bool = False,
                   column: numbers.Column | None = None) -> str:
    """``0.951 ± 0.031`` rounded by the standard error, or to its column's precision
    (``ablab.report.numbers.format_mean_sd``); ``(n=k)`` follows when only k of the n finished runs have the value."""
    text = numbers.format_mean_sd(mean, sd, n_values, scientific, column=column)
    return text if text == MISSING or n_values == n else f"{text} (n={n_values})"


def table_rows(agg: pd.DataFrame, refs: list[str], by: str = "label") -> tuple[list[str], list[list[str]]]:
    """Header and string cells: variant, per metric its mean ± SD (then Δ per baseline), n, diverged, failed.

    Every column has one precision and one notation (``column_formats``).
    """
    roles = _baseline_roles(agg)
    header = ["variant"]
    for ref in refs:
        header += [ref, *(f"Δ vs {role}" for role in roles if f"{ref}.delta_{role}" in agg)]
    header += ["n", "diverged", "failed"]
    cols = column_formats(agg, refs)
    delta = lambda row, ref, role: format_delta(row, ref, role, column=cols[(ref, role)])  # noqa: E731
    return header, _rows(agg, refs, by, roles, cols, delta)


def console_rows(agg: pd.DataFrame, refs: list[str], by: str = "label") -> tuple[list[str], list[list[str]], list[int]]:
    """The terminal's table: Δ cells brief (``+0.012 p=0.041``; Holm and n are in the CSV), and the column
    groups (a metric with its Δ columns; the counts) as the index of each group's first column."""
    roles = _baseline_roles(agg)
    cols = column_formats(agg, refs)
    header, groups = ["variant"], []
    for ref in refs:
        groups.append(len(header))
        header += [ref, *(f"Δ {role}" for role in roles if (ref, role) in cols)]
    groups.append(len(header))
    header += ["n", "div.", "failed"]
    delta = lambda row, ref, role: delta_brief(row, ref, role, cols[(ref, role)])[0]  # noqa: E731
    return header, _rows(agg, refs, by, roles, cols, delta), groups


def _rows(agg: pd.DataFrame, refs: list[str], by: str, roles: list[str], cols: dict, delta) -> list[list[str]]:
    """A table's string cells per variant: its label, per metric its mean ± SD then ``delta(row, ref, role)``
    per baseline role with a column, then n, diverged and failed."""
    rows = []
    for _, row in agg.iterrows():
        cells = [str(row[by])]
        for ref in refs:
            cells.append(format_mean_sd(row[f"{ref}.mean"], row[f"{ref}.sd"], int(row[f"{ref}.n"]), int(row["n"]),
                                        column=cols[ref]))
            cells += [delta(row, ref, role) for role in roles if (ref, role) in cols]
        cells += [str(int(row["n"])), str(int(row["n_diverged"])), str(int(row["n_failed"]))]
        rows.append(cells)
    return rows


CONSOLE_WIDTH = 120  # the terminal table's lines never exceed this
LABEL_WIDTH = 44  # longer variant labels wrap (at ", ") onto the next lines


def to_text(agg: pd.DataFrame, refs: list[str], rule: str, width: int = CONSOLE_WIDTH) -> str:
    """Fixed-width table for the terminal, preceded by its caption: at most ``width`` characters a line,
    split into blocks of whole column groups (each repeating the variant column), long labels wrapped."""
    header, rows, groups = console_rows(agg, refs)
    labels = [_wrap(r[0], LABEL_WIDTH) for r in rows]
    first = max([len(header[0]), *(len(line) for lines in labels for line in lines)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    bounds = [*groups, len(header)]
    spans = [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]
    blocks: list[list[int]] = [[]]
    for span in spans:
        used = first + sum(2 + widths[i] for i in blocks[-1])
        if blocks[-1] and used + sum(2 + widths[i] for i in span) > width:
            blocks.append([])
        blocks[-1] += span
    out = []
    for block in blocks:
        lines = ["  ".join([header[0].ljust(first)] + [header[i].rjust(widths[i]) for i in block]),
                 "  ".join(["-" * first] + ["-" * widths[i] for i in block])]
        for cells, wrapped in zip(rows, labels):
            lines.append("  ".join([wrapped[0].ljust(first)] + [cells[i].rjust(widths[i]) for i in block]))
            lines += ["  " + more for more in wrapped[1:]]
        out.append("\n".join(line.rstrip() for line in lines))
    return "\n".join(_wrap_text(caption(rule, agg), width)) + "\n\n" + "\n\n".join(out) + "\n"


def _wrap(label: str, width: int) -> list[str]:
    """A label in lines of at most ``width`` characters, broken after ", " where it can be."""
    import textwrap

    if len(label) <= width:
        return [label]
    return textwrap.wrap(label, width - 2, break_on_hyphens=False) or [label]


def _wrap_text(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]


def to_markdown(agg: pd.DataFrame, refs: list[str], rule: str) -> str:
    """GitHub Markdown table, preceded by its caption; labels and names from the spec are shown literally."""
    header, rows = table_rows(agg, refs)

    body = [markdown_row(header), "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|", *map(markdown_row, rows)]
    return escape_markdown(caption(rule, agg)) + "\n\n" + "\n".join(body) + "\n"


def to_csv_frame(agg: pd.DataFrame, refs: list[str], rule: str, by: str = "label") -> pd.DataFrame:
    """The numbers behind the table: counts, then mean, sd, n per metric, Δ and its tests, and the selection rule."""
    columns = [by, "n", "n_diverged", "n_failed"] + [f"{r}.{s}" for r in refs for s in ("mean", "sd", "n")]
    roles = _baseline_roles(agg)
    columns += [f"baseline_{role}" for role in roles]
    columns += [f"{r}.{s}_{role}" for r in refs for role in roles
                for s in ("delta", "se_delta", "p", "p_holm", "n_baseline") if f"{r}.delta_{role}" in agg]
    return agg[columns].assign(selection=rule)


