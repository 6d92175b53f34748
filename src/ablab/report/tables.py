"""The final-metrics table: mean ± SD over seeds per variant, as CSV, Markdown and terminal text."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ablab.store import write_atomic

MISSING = "—"


def caption(rule: str) -> str:
    """What the table shows and how the numbers were selected, in one sentence."""
    return (
        f"Selection: {rule}. Values are mean ± SD over the n finished seeds (SD with ddof=1); "
        "diverged and failed runs are counted but excluded from mean and SD."
    )


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
    """Header and string cells: variant, one mean ± SD per metric, n, diverged, failed."""
    header = ["variant", *refs, "n", "diverged", "failed"]
    rows = []
    for _, row in agg.iterrows():
        cells = [str(row[by])]
        for ref in refs:
            cells.append(format_mean_sd(row[f"{ref}.mean"], row[f"{ref}.sd"], int(row[f"{ref}.n"]), int(row["n"])))
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
    return caption(rule) + "\n\n" + "\n".join(lines) + "\n"


def to_markdown(agg: pd.DataFrame, refs: list[str], rule: str) -> str:
    """GitHub Markdown table, preceded by its caption; ``|`` in labels is escaped."""
    header, rows = table_rows(agg, refs)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    body = [line(header), "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|", *map(line, rows)]
    return caption(rule) + "\n\n" + "\n".join(body) + "\n"


def to_csv_frame(agg: pd.DataFrame, refs: list[str], rule: str, by: str = "label") -> pd.DataFrame:
    """The numbers behind the table: counts, then mean, sd, n per metric, and the selection rule."""
    columns = [by, "n", "n_diverged", "n_failed"] + [f"{r}.{s}" for r in refs for s in ("mean", "sd", "n")]
    return agg[columns].assign(selection=rule)


def write_tables(agg: pd.DataFrame, refs: list[str], rule: str, directory: Path) -> list[Path]:
    """Write ``final.csv`` (full precision) and ``final.md`` into ``directory``."""
    csv_path, md_path = directory / "final.csv", directory / "final.md"
    write_atomic(csv_path, to_csv_frame(agg, refs, rule).to_csv(index=False).encode())
    write_atomic(md_path, to_markdown(agg, refs, rule).encode())
    return [csv_path, md_path]


def _is_number(x) -> bool:
    return x is not None and not pd.isna(x) and math.isfinite(float(x))


def _num(x: float) -> str:
    return f"{float(x):.4g}"
