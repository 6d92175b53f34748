"""Run-to-run variability per variant from stored test logits (seed 002 Tables 5.1/5.5/B.1, Fig. 5.2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablab.analysis.stored_variability import load_variant_logits, onset_epoch, variability_table
from ablab.artifacts import PREDICTIONS_KIND
from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.figures import new_figure, plain_text, save_png, shorten
from ablab.report.html import e, swatch
from ablab.report.tables import MISSING, packing_note
from ablab.report.numbers import Column, column_format, format_with_error, is_number
from ablab.files import write_atomic

SPLIT = "test"
TABLE, ONSET_TABLE, ONSET_FIGURE = "variability.csv", "variability_onset.csv", "variability_onset.png"
# (column, header, format of the value); every metric but the means has an error column "<name>_err"
COLUMNS = (
    ("acc_sd", "Acc SD (%)", ".3g"), ("loss_sd", "CE SD", ".3g"), ("disagreement", "Pairwise disagree (%)", ".3g"),
    ("spearman", "Pairwise corr. (Spearman ρ)", ".4f"), ("ensemble_delta", "Ensemble Δ (%)", ".3g"),
)


@REPORT_SECTIONS.register("variability")
class Variability(ReportSection):
    """Acc/CE SD, pairwise disagreement, Spearman ρ and ensemble Δ per variant from stored test logits; VR %."""

    def applies(self, ctx: ReportContext) -> bool:
        if not len(ctx.runs):
            return False
        arts = ctx.artifacts
        return bool(((arts["kind"] == PREDICTIONS_KIND) & (arts["split"] == SPLIT)).any())

    def render(self, ctx: ReportContext) -> PagePart:
        variants = load_variant_logits(ctx.store, ctx.runs, SPLIT)
        roles = _baseline_roles(ctx, [v.label for v in variants])
        table = variability_table(variants, {role: ctx.baseline_pairs[role] for role in roles})
        idle = idle_kernels(ctx.runs)
        table["kernels_no_effect"] = table["variant"].isin(set(idle))
        csv_path = ctx.table_path(TABLE)
        write_atomic(csv_path, to_csv(table).encode())
        packing = packing_note(ctx.runs)
        html = ["<h2>Run-to-run variability</h2>", _note(table, roles), _html_table(table, roles, ctx.colours, idle),
                _kernels_note(idle), f"<p class=\"note\">{e(packing)}</p>" if packing else "", _left_out(variants)]
        part = PagePart("\n".join(h for h in html if h), css=_CSS, tables=[csv_path])
        onset = _onset_frame(ctx.runs, table)
        if onset is not None:
            part.html += "\n" + self._onset(ctx, onset, part)
        return part

    def _onset(self, ctx: ReportContext, onset: pd.DataFrame, part: PagePart) -> str:
        csv_path, fig_path = ctx.table_path(ONSET_TABLE), ctx.figure_path(ONSET_FIGURE)
        write_atomic(csv_path, to_csv(onset).encode())
        plot_onset(onset, fig_path)
        part.tables.append(csv_path)
        part.figures.append(fig_path)
        return ("<h3>Variability against the onset epoch</h3>\n<p class=\"note\">Each point is a variant whose runs "
                "share their training up to the onset epoch (their <code>init_from.epoch</code>; 0: trained from "
                "scratch) and differ from there (seed 002 Fig. 5.2): accuracy SD ± bootstrap error, one line per "
                "source (the variant's other axes). <a href=\"tables/" + ONSET_TABLE + "\">CSV</a>.</p>\n"
                f"<figure><img src=\"figures/{ONSET_FIGURE}\" alt=\"accuracy SD against the onset epoch\"></figure>")


def _baseline_roles(ctx: ReportContext, labels: list[str]) -> dict[str, str]:
    """role -> its name for each ``report.baselines`` role that gives some variant a baseline; each variant
    is compared with its own baseline variant (``ctx.baseline_pairs``, as in the final table)."""
    return {role: ctx.baselines[role] for role, of in ctx.baseline_pairs.items()
            if any(of.get(label) for label in labels)}


def _note(table: pd.DataFrame, roles: dict[str, str]) -> str:
    text = (f"From the logits each run stored on the {SPLIT} split (evaluator <code>predictions</code>) at the "
            "variant's last stored epoch; n = the runs used. SD over runs with ddof = 0 ± the SD of the SD over "
            "10,000 bootstrap resamples (seed 1). Pairwise values are means over the n(n−1)/2 pairs ± a jackknife "
            "standard error over runs (n ≥ 3). Spearman ρ: of the flattened logits. Ensemble Δ (Eq. 5.1): the "
            "accuracy of the pair's averaged logits minus the pair's mean accuracy, in percentage points.")
    if roles:
        text += (" VR: mean over the five metrics of 1 − value/baseline value, with 1 − ρ for the correlation "
                 "(seed 002 Table 5.5), against the variant's own baseline (the same other settings, as in the "
                 "final table; — where it has none).")
    if (table["n"] < 2).any():
        text += " A variant with n &lt; 2 has no SD and no pairs (—)."
    return f"<p class=\"note\">{text} <a href=\"tables/{TABLE}\">CSV</a>.</p>"


def _fmt(value: float, spec: str) -> str:
    return MISSING if value is None or not math.isfinite(value) else format(value, spec)


def _cell(row: pd.Series, column: str, spec: str, precision: Column | None = None) -> str:
    """The value ± its error bar at its column's precision (``numbers.column_format`` of the column's errors)."""
    value, err = row[column], row[f"{column}_err"]
    if not (is_number(value) and is_number(err)):
        return f"<td class=\"num\">{e(_fmt(value, spec))}</td>"
    return f"<td class=\"num\">{e(format_with_error(value, err, precision))}</td>"


def idle_kernels(runs: pd.DataFrame) -> dict[str, tuple[str, bool]]:
    """label -> (device, seeds held) for each variant whose runs all asked for nondeterministic kernels on a
    device where they have none (``info["kernels"]``: deterministic false, has_effect false); seeds held:
    its runs' seeds are all equal, so they are one experiment repeated."""
    out: dict[str, tuple[str, bool]] = {}
    if "info" not in runs or "spec" not in runs:  # a store of an earlier version
        return out
    for label, group in runs.groupby("label", sort=False):
        kernels = [(info or {}).get("kernels") if isinstance(info, dict) else None for info in group["info"]]
        if not kernels or any(not k or k.get("deterministic", True) or k.get("has_effect", True) for k in kernels):
            continue
        devices = sorted({d.split(" (")[0] for d in group.get("device", []) if isinstance(d, str) and d})
        seeds = {json.dumps((spec or {}).get("seeds"), sort_keys=True) for spec in group["spec"]}
        out[str(label)] = (", ".join(devices) or "this device", len(seeds) == 1)
    return out


def _kernels_note(idle: dict[str, tuple[str, bool]]) -> str:
    items = []
    for label, (device, held) in idle.items():
        text = (f"its runs use nondeterministic kernels (<code>deterministic: false</code>), which have no effect "
                f"on {e(device)} (only CUDA has nondeterministic kernels; runs' info: <code>has_effect: false</code>)")
        text += ("; every seed is held, so its runs are the same computation and zero variability is expected."
                 if held else "; its variability comes from the seeds it varies alone.")
        items.append(f"<li>† {e(label)}: {text}</li>")
    return f"<ul class=\"note\">{''.join(items)}</ul>" if items else ""


def _html_table(table: pd.DataFrame, roles: dict[str, str], colours: dict[str, str],
                idle: dict[str, tuple[str, bool]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for _, h, _ in COLUMNS)
    head += "".join(f"<th>VR % vs {e(name)}</th>" for name in roles.values())
    precision = {c: column_format(table[c], table[f"{c}_err"]) for c, _, _ in COLUMNS}  # one per column
    rows = []
    for _, row in table.iterrows():
        cells = "".join(_cell(row, c, spec, precision[c]) for c, _, spec in COLUMNS)
        cells += "".join(f"<td class=\"num\">{e(_fmt(row[f'vr_{role}'], '.0f'))}</td>" for role in roles)
        mark = " †" if row["variant"] in idle else ""
        rows.append(f"<tr><td>{swatch(colours, row['variant'])}{e(row['variant'])}{mark}</td>"
                    f"<td class=\"num\">{int(row['n'])}</td>"
                    f"<td class=\"num\">{e(_fmt(row['accuracy_mean'], '.2f'))}</td>{cells}</tr>")
    return ("<table class=\"variability\"><tr><th>variant</th><th>n</th><th>mean acc (%)</th>" + head + "</tr>\n"
            + "\n".join(rows) + "\n</table>")


def _left_out(variants) -> str:
    items = [f"<li>{e(v.label)}: {e(v.problem)}</li>" for v in variants if v.problem]
    items += [f"<li>{e(v.label)}: run {e(run)}: {e(why)}</li>" for v in variants for run, why in v.left_out.items()]
    return f"<p class=\"note\">Left out:</p>\n<ul class=\"note\">{''.join(items)}</ul>" if items else ""


def _onset_frame(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame | None:
    """Accuracy SD per variant with its onset epoch and source, when ≥ 2 onsets have a variant with an SD."""
    rows = []
    for label, group in runs.groupby("label", sort=False):
        onsets = {onset_epoch(spec) for spec in group["spec"]}
        row = table[table["variant"] == label]
        if len(onsets) != 1 or row.empty or not np.isfinite(row.iloc[0]["acc_sd"]):
            continue
        axes = group.iloc[0]["axes"] or {}
        source = ", ".join(f"{k}={v}" for k, v in sorted(axes.items())
                           if not str(k).startswith("init_from") and k != "label") or "all"
        rows.append({"variant": label, "source": source, "onset_epoch": onsets.pop(),
                     "acc_sd": row.iloc[0]["acc_sd"], "acc_sd_err": row.iloc[0]["acc_sd_err"],
                     "loss_sd": row.iloc[0]["loss_sd"], "loss_sd_err": row.iloc[0]["loss_sd_err"]})
    frame = pd.DataFrame(rows)
    if frame.empty or frame["onset_epoch"].nunique() < 2:
        return None
    return frame.sort_values(["source", "onset_epoch"], kind="stable").reset_index(drop=True)


def plot_onset(onset: pd.DataFrame, path: Path) -> None:
    """Accuracy SD ± error against the onset epoch, one line per source."""
    fig = new_figure(figsize=(6.0, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for source, rows in onset.groupby("source", sort=False):
        ax.errorbar(rows["onset_epoch"], rows["acc_sd"], yerr=rows["acc_sd_err"].fillna(0.0), marker="o",
                    capsize=3, label=plain_text(shorten(source)))
    ax.set_xlabel("onset epoch (runs identical before it)")
    ax.set_ylabel("accuracy SD over runs (%)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    save_png(fig, path)


_CSS = "table.variability td.num { white-space: nowrap; }\n"
