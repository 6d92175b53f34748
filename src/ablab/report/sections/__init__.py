"""The report's sections: registered classes that decide whether they apply and render their part.

The page is every registered section that applies to the study, in ascending ``order``
(``load_sections``); ``ablab list report_section`` names them. Every module of this package is
imported here, so adding a section is one module with one decorated class, and nothing else::

    from ablab.registry import REPORT_SECTIONS
    from ablab.report.context import Part, ReportContext, ReportSection
    from ablab.report.html import e

    @REPORT_SECTIONS.register("ensembles")
    class Ensembles(ReportSection):
        '''Ensembles of stored runs against their members (post-hoc studies).'''  # `ablab list` shows it

        order = 48  # after the mixing section (45), before the grids (50)

        def applies(self, ctx: ReportContext) -> bool:
            return any(ctx.metrics["name"] == "ensemble_accuracy")

        def render(self, ctx: ReportContext) -> Part:
            path = ctx.table_path("ensembles.csv")
            ...  # compute from ctx.runs / ctx.metrics / ctx.artifact(run, NAME), write the file
            return Part(html=f"<h2>Ensembles</h2>\\n<p>{e(...)}</p>", tables=[path])

Rules a section keeps:
- read only through ``ctx``: ``study``, ``runs``, ``metrics``, ``settings``, ``runs_with(name)`` and
  ``artifact(run, name)`` (artifact names and formats in ``ablab.artifacts``), or ``ctx.store``'s
  reading API; never import ``ablab.train``;
- escape every string from the spec or the store with ``e``;
- write files only at ``ctx.figure_path(name)`` / ``ctx.table_path(name)`` and list them in the
  ``Part``: the next report removes the files a section no longer writes; CSV through
  ``ablab.report.exact_csv.to_csv``;
- a setting that names something the study lacks is a message in the section, not a crash.

Orders in use: header 10, variants 20, curves 30, final_table 40, mixing 45, grids 50, best 60,
sharpness 70, variability 75, cka 77, norm_params 80, relu_sparsity 90, budget 100, problems 110, spec 120.
"""

from __future__ import annotations

import importlib
import pkgutil

from ablab.registry import REPORT_SECTIONS
from ablab.report.context import ReportSection

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def load_sections() -> list[ReportSection]:
    """One instance of every registered section, in page order."""
    sections = [REPORT_SECTIONS.get(name)() for name in REPORT_SECTIONS.list_names()]
    return sorted(sections, key=lambda section: section.order)
