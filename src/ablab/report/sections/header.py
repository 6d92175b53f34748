"""The page's head: the study's name and description, its file, run counts, code versions, devices."""

from __future__ import annotations

import re

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import PagePart, ReportContext, ReportSection
from ablab.report.html import e
from ablab.report.tables import MISSING

_ONE_THREAD = re.compile(r"\(1 threads\)")

STATUS_ORDER = ("done", "diverged", "failed", "running", "pending")


@REPORT_SECTIONS.register("header")
class Header(ReportSection):
    """The study's name, description, spec file, runs by status, code versions and devices."""

    def render(self, ctx: ReportContext) -> PagePart:
        study = ctx.study
        items = [("file", e(ctx.study_file or MISSING)), ("runs", f"{len(ctx.runs)} ({status_counts(ctx.runs)})")]
        for column, title in (("code_version", "code version"), ("device", "device")):
            if column in ctx.runs:
                values = sorted({_number_agreement(str(v)) for v in ctx.runs[column].dropna() if str(v)})
                if values:
                    items.append((title, ", ".join(e(v) for v in values)))
        rows = "".join(f"<dt>{title}</dt><dd>{value}</dd>" for title, value in items)
        return PagePart(
            f"<h1>{e(study.name)}</h1>\n"
            + (f"<p>{e(study.description)}</p>\n" if study.description else "")
            + f"<dl>{rows}</dl>"
        )


def status_counts(runs) -> str:
    """``done 7, diverged 1, failed 1``: runs per status, in the order a study progresses; escaped."""
    counts = runs["status"].value_counts()
    statuses = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts.index) - set(STATUS_ORDER))
    return ", ".join(f"{e(s)} {int(counts[s])}" for s in statuses) or "none"


def _number_agreement(device: str) -> str:
    """``cpu (1 thread)``: a device string stored before ``ablab.labels.plural`` read ``(1 threads)``."""
    return _ONE_THREAD.sub("(1 thread)", device)
