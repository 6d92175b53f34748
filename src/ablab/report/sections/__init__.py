"""The report's sections: registered classes that decide whether they apply and render their part.

The page is every registered section that applies to the study, in the order of ``PAGE_ORDER``
(``load_sections``); ``ablab list report_section`` names them. A section not in that list (one's
own, registered in a module the study ``imports``) goes right after the section its ``after``
names, else at the end of the page. Every module of this package is imported here, so adding a
built-in section is one module with one decorated class and its name in ``PAGE_ORDER``. One's own
section::

    from ablab.registry import REPORT_SECTIONS
    from ablab.report.context import PagePart, ReportContext, ReportSection
    from ablab.report.html import e

    @REPORT_SECTIONS.register("ensembles")
    class Ensembles(ReportSection):
        '''Ensembles of stored runs against their members (post-hoc studies).'''  # `ablab list` shows it

        after = "mixing"  # the page shows it right after the mixing section

        def applies(self, ctx: ReportContext) -> bool:
            return any(ctx.metrics["name"] == "ensemble_accuracy")

        def render(self, ctx: ReportContext) -> PagePart:
            path = ctx.table_path("ensembles.csv")
            ...  # compute from ctx.runs / ctx.metrics / ctx.artifact(run, NAME), write the file
            return PagePart(html=f"<h2>Ensembles</h2>\\n<p>{e(...)}</p>", tables=[path])

Rules a section keeps:
- read only through ``ctx``: ``study`` (the validated ``Study``), ``settings`` (its ``report`` block),
  ``runs``, ``metrics``, ``runs_with(name)`` and ``artifact(run, name)`` (artifact names and formats
  in ``ablab.artifacts``), or ``ctx.store``'s reading API; never import ``ablab.train``;
- escape every string from the spec or the store with ``e``;
- write files only at ``ctx.figure_path(name)`` / ``ctx.table_path(name)`` and list them in the
  ``PagePart``: the next report removes the files a section no longer writes; CSV through
  ``ablab.report.exact_csv.to_csv``;
- a setting that names something the study lacks is a message in the section, not a crash.
"""

from __future__ import annotations

import importlib
import pkgutil

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import ReportSection

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


PAGE_ORDER = (
    "header", "continued_runs", "post_hoc_units", "variants", "curves", "final_table", "mixing", "example_weighing",
    "grids", "best", "sharpness", "robustness", "transfer", "logit_histograms", "label_smoothing",
    "variability", "cka", "loss_spread", "norm_params", "relu_sparsity", "output_range", "budget", "problems", "spec",
)


def load_sections() -> list[ReportSection]:
    """One instance of every registered section, in page order (``PAGE_ORDER``, the others by their ``after``)."""
    return [REPORT_SECTIONS.get(name)() for name in sorted(REPORT_SECTIONS.list_names(), key=_place)]


def _place(name: str) -> tuple[int, int, str]:
    """Where a section goes: its index in ``PAGE_ORDER``, or just after the section it names in ``after``
    (several such: by name), else after every other."""
    if name in PAGE_ORDER:
        return PAGE_ORDER.index(name), 0, name
    after = REPORT_SECTIONS.get(name).after
    return (PAGE_ORDER.index(after) if after in PAGE_ORDER else len(PAGE_ORDER)), 1, name
