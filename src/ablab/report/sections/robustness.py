"""White-box robust accuracy per variant: clean and under each recorded attack (seed 002 Tables 3.1/3.3/3.5, 3.6).

A robust metric is ``<label>_accuracy`` recorded beside its ``<label>_clean_accuracy`` (the ``robust`` and
``autoattack`` evaluators). The first table has the clean accuracy, FGSM and PGD with up to 20 steps
(Tables 3.1/3.3/3.5: Natural, FGSM, PGD-5/10/20); the second, when a run recorded a stronger attack, PGD-20
beside PGD with more steps, SPSA and AutoAttack (Table 3.6). Cells: mean ± SD over seeds, with Δ and
Welch's p against each ``report.baselines`` role (the study's "regular" training, say). On CIFAR-10/100 and
SVHN the thesis' row is shown beside each variant whose label names its method (``THESIS_WHITE_BOX``).
"""

from __future__ import annotations

import re

import pandas as pd

from ablab.analysis.mixing import dataset_of
from ablab.analysis.seeds import RUN_COLUMNS, aggregate
from ablab.files import write_atomic
from ablab.registry import REPORT_SECTIONS
from ablab.report import tables
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.exact_csv import to_csv
from ablab.report.html import e, swatch

SPLIT = "test"
WHITE_BOX, STRONGEST = "robustness.csv", "robustness_strongest.csv"
# accuracy %, as printed: seed002.md §3.3, Tables 3.1 (L692–700), 3.3 (L730–738), 3.5 (L770–778): natural, FGSM,
# PGD-5/10/20; Table 3.6 (L788–796, CIFAR-10, 1,000 images): PGD-20, PGD-1000, SPSA
THESIS_WHITE_BOX = {
    "cifar10": {"regular": (87.4, 6.1, 0.0, 0.0, 0.0), "label_smoothing": (86.9, 54.7, 49.4, 41.7, 34.4),
                "pgd": (75.8, 50.5, 51.0, 46.1, 45.3), "alp": (74.0, 52.6, 53.6, 49.1, 48.5),
                "lrm": (68.5, 52.8, 53.8, 51.4, 51.0)},
    "cifar100": {"regular": (59.1, 2.3, 0.1, 0.0, 0.0), "label_smoothing": (55.0, 11.5, 2.3, 0.9, 0.2),
                 "pgd": (50.2, 26.2, 27.2, 23.9, 23.6), "alp": (44.9, 27.3, 28.3, 26.0, 25.9),
                 "lrm": (43.8, 28.1, 29.1, 26.8, 26.6)},
    "svhn": {"regular": (96.7, 14.8, 0.0, 0.0, 0.0), "label_smoothing": (97.0, 50.8, 15.1, 4.4, 1.3),
             "pgd": (85.3, 50.5, 47.3, 39.6, 38.0), "alp": (82.5, 49.6, 47.1, 40.0, 38.6),
             "lrm": (83.6, 51.5, 48.4, 40.9, 39.4)},
}
THESIS_STRONGEST = {"cifar10": {"regular": (0.0, 0.0, 0.0), "label_smoothing": (34.4, 7.2, 8.9),
                                "pgd": (45.3, 45.2, 45.4), "alp": (48.5, 48.3, 46.1), "lrm": (51.0, 51.1, 47.9)}}
THESIS_TABLES = {"cifar10": ("3.1", "3.6"), "cifar100": ("3.3", None), "svhn": ("3.5", None)}
ALIASES = {"regular": "regular", "baseline": "regular", "label_smoothing": "label_smoothing", "ls": "label_smoothing",
           "pgd": "pgd", "pgd_at": "pgd", "alp": "alp", "lrm": "lrm"}


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
        dataset = dataset_of(ctx.runs) if "spec" in ctx.runs else None
        for refs, name, title, thesis, kind in (
                (first, WHITE_BOX, "", THESIS_WHITE_BOX, 0),
                (strong, STRONGEST, "Strongest attacks (seed 002 Table 3.6: PGD-20, PGD-1000, SPSA on 1,000 images)",
                 THESIS_STRONGEST, 1)):
            if not refs:
                continue
            agg = robust_agg(ctx, refs)
            path = ctx.table_path(name)
            write_atomic(path, to_csv(tables.to_csv_frame(agg, refs, ctx.rule)).encode())
            paths.append(path)
            table_no = THESIS_TABLES.get(dataset or "", (None, None))[kind]
            beside = thesis_column(list(agg["label"]), thesis.get(dataset or "", {})) if table_no else {}
            html += ([f"<h3>{e(title)}</h3>"] if title else []) + [
                robust_table_html(agg, refs, ctx.colours, beside, f"thesis, Table {table_no} (%)"),
                f"<p class=\"note\">Also as <a href=\"tables/{name}\">CSV</a>.</p>"]
        return PagePart("\n".join(html), tables=paths)


def robust_agg(ctx: ReportContext, refs: list[str]) -> pd.DataFrame:
    """Mean, SD, n per variant of ``refs``, with Δ and p per baseline role (the final table's statistics)."""
    per_run = ctx.per_run[[c for c in ctx.per_run.columns if c in RUN_COLUMNS or c in refs]]
    return tables.add_baseline_deltas(aggregate(per_run, by="label"), per_run, refs, ctx.baselines,
                                      pairs=ctx.baseline_pairs)


def thesis_column(labels: list[str], thesis: dict[str, tuple]) -> dict[str, str]:
    """Per variant whose label names a method of the thesis' table (``regular``, ``label_smoothing`` or ``ls``,
    ``pgd``, ``alp``, ``lrm``; case, spaces and hyphens aside): its printed row, ``87.4 / 6.1 / …``."""
    out = {}
    for label in labels:
        method = ALIASES.get(re.sub(r"[\s-]+", "_", str(label).strip().lower()))
        if method in thesis:
            out[label] = " / ".join(f"{v:.1f}" for v in thesis[method])
    return out


def robust_table_html(agg: pd.DataFrame, refs: list[str], colours: dict[str, str], beside: dict[str, str] | None = None,
                      beside_header: str = "") -> str:
    """The final table's cells (mean ± SD, then Δ and p per baseline), one column per attack; the thesis' row
    beside each variant it has one for."""
    header, rows = tables.table_rows(agg, refs)
    if beside:
        header = [*header, beside_header]
        rows = [[*row, beside.get(row[0], "")] for row in rows]
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "\n".join("<tr><td>" + swatch(colours, row[0]) + e(row[0]) + "</td>"
                     + "".join(f"<td class=\"num\">{e(c)}</td>" for c in row[1:]) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}\n</table>"
