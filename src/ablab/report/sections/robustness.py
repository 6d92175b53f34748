"""White-box robust accuracy per variant: clean and under each recorded attack (seed 002 Tables 3.1/3.3/3.5, 3.6).

A robust metric is ``<label>_accuracy`` recorded beside its ``<label>_clean_accuracy`` (the ``robust`` and
``autoattack`` evaluators). The first table has the clean accuracy, FGSM and PGD with up to 20 steps
(Tables 3.1/3.3/3.5: Natural, FGSM, PGD-5/10/20); the second, when a run recorded a stronger attack, PGD-20
beside PGD with more steps, SPSA and AutoAttack (Table 3.6). Cells: mean ± SD over seeds, with Δ and
Welch's p against each ``report.baselines`` role (the study's "regular" training, say).
"""

from __future__ import annotations

import re

import pandas as pd

from ablab.analysis.seeds import RUN_COLUMNS, aggregate
from ablab.files import write_atomic
from ablab.registry import REPORT_SECTIONS
from ablab.report import tables
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.html import e, swatch

SPLIT = "test"
WHITE_BOX, STRONGEST = "robustness.csv", "robustness_strongest.csv"


def attack_order(label: str) -> tuple[int, int, str]:
    """Sort key of an attack label: FGSM, PGD by steps, SPSA, AutoAttack, then any other by name."""
    pgd = re.fullmatch(r"pgd(\d+)", label)
    if label == "fgsm":
        return 0, 0, label
    if pgd:
        return 1, int(pgd.group(1)), label
    return {"spsa": 2, "autoattack": 3}.get(label, 4), 0, label


def robust_labels(columns) -> list[str]:
    """The attack labels of the ``test.<label>_accuracy`` columns that have a ``<label>_clean_accuracy`` beside them."""
    names = {c[len(SPLIT) + 1:] for c in columns if str(c).startswith(f"{SPLIT}.")}
    labels = [n[: -len("_accuracy")] for n in names
              if n.endswith("_accuracy") and not n.endswith("_clean_accuracy")
              and n.replace("_accuracy", "_clean_accuracy") in names]
    return sorted(labels, key=attack_order)


def table_refs(labels: list[str], clean: bool) -> tuple[list[str], list[str]]:
    """(white-box refs, strongest-attack refs): clean, FGSM, PGD ≤ 20; and PGD-20, PGD > 20, SPSA, AutoAttack."""
    pgd_steps = {lb: attack_order(lb)[1] for lb in labels if attack_order(lb)[0] == 1}
    first = [lb for lb in labels if attack_order(lb)[0] == 0 or (lb in pgd_steps and pgd_steps[lb] <= 20)]
    strong = [lb for lb in labels if lb not in first]
    refs = ([f"{SPLIT}.accuracy"] if clean else []) + [f"{SPLIT}.{lb}_accuracy" for lb in first]
    if not strong:
        return refs, []
    anchor = [lb for lb in first if lb in pgd_steps][-1:]
    return refs, [f"{SPLIT}.{lb}_accuracy" for lb in anchor + strong]


@REPORT_SECTIONS.register("robustness")
class Robustness(ReportSection):
    """Clean and robust accuracy per variant (FGSM, PGD-k, SPSA, AutoAttack), mean ± SD, Δ and p (seed 002 Tables 3.1, 3.6)."""

    def applies(self, ctx: ReportContext) -> bool:
        return bool(len(ctx.runs)) and bool(robust_labels(ctx.per_run.columns))

    def render(self, ctx: ReportContext) -> PagePart:
        labels = robust_labels(ctx.per_run.columns)
        first, strong = table_refs(labels, f"{SPLIT}.accuracy" in ctx.per_run.columns)
        html = ["<h2>Adversarial robustness (white-box)</h2>",
                "<p class=\"note\">Accuracy on the test split, clean and under each attack the runs recorded, "
                f"{e(ctx.rule)}; mean ± SD over seeds, Δ and Welch's p against each baseline (report.baselines). "
                "As seed 002 Tables 3.1, 3.3 and 3.5 (natural, FGSM, PGD-5/10/20). Attacked accuracies are on "
                "each evaluator's subsample; its clean accuracy there is test.&lt;attack&gt;_clean_accuracy.</p>"]
        paths = []
        for refs, name, title in ((first, WHITE_BOX, ""), (strong, STRONGEST, "Strongest attacks "
                                                           "(seed 002 Table 3.6: PGD-20, PGD-1000, SPSA on 1,000 images)")):
            if not refs:
                continue
            agg = robust_agg(ctx, refs)
            path = ctx.table_path(name)
            write_atomic(path, to_csv(tables.to_csv_frame(agg, refs, ctx.rule)).encode())
            paths.append(path)
            html += ([f"<h3>{e(title)}</h3>"] if title else []) + [
                robust_table_html(agg, refs, ctx.colours),
                f"<p class=\"note\">Also as <a href=\"tables/{name}\">CSV</a>.</p>"]
        return PagePart("\n".join(html), tables=paths)


def robust_agg(ctx: ReportContext, refs: list[str]) -> pd.DataFrame:
    """Mean, SD, n per variant of ``refs``, with Δ and p per baseline role (the final table's statistics)."""
    per_run = ctx.per_run[[c for c in ctx.per_run.columns if c in RUN_COLUMNS or c in refs]]
    return tables.add_baseline_deltas(aggregate(per_run, by="label"), per_run, refs, ctx.baselines,
                                      pairs=ctx.baseline_pairs)


def robust_table_html(agg: pd.DataFrame, refs: list[str], colours: dict[str, str]) -> str:
    """The final table's cells (mean ± SD, then Δ and p per baseline), one column per attack."""
    header, rows = tables.table_rows(agg, refs)
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "\n".join("<tr><td>" + swatch(colours, row[0]) + e(row[0]) + "</td>"
                     + "".join(f"<td class=\"num\">{e(c)}</td>" for c in row[1:]) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}\n</table>"
