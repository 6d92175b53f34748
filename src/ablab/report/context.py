"""What a report section is, and what it reads: the store's data once, plus numbers sections share.

A ``ReportContext`` wraps a store: ``ablab.store.Store`` or anything with ``path``, ``study()``,
``runs()``, ``metrics()`` and ``artifact_path(run, name)``; sections read the store only
through it, and the stored study as a validated ``Study`` (``ctx.study``). Each property is
computed on first use and kept, so the sections that need the final selection or the variant
colours share one computation, and a page without them costs nothing. A ``ReportSection`` decides from the context whether it ``applies`` and ``render``s a
``PagePart``: its HTML, its CSS and the files it wrote (see ``ablab.report.sections``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablab.analysis.seeds import aggregate, describe_selection, select_final
from ablab.artifacts import load_npz
from ablab.report.baselines import baseline_pairs, baseline_variants, families, selector_text
from ablab.report.figures import (
    BASELINE_LINE_WIDTH,
    LINE_WIDTH,
    Panels,
    curve_panels,
    keyed_colours,
    line_widths,
    variant_colours,
)
from ablab.report.tables import add_baseline_deltas
from ablab.spec.loading import read_stored_study
from ablab.spec.models import ReportSettings, Study


@dataclass
class PagePart:
    """One rendered section: its HTML, CSS it adds to the page, and the figure and table files it wrote."""

    html: str
    css: str = ""
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


class ReportContext:
    """The study, its runs and metrics as the store holds them, and what several sections derive from them."""

    def __init__(self, store: Any, out: Path):
        self.store = store
        self.out = Path(out)
        self._artifact_runs: dict[str, list[str]] = {}

    # ---- the store's data

    @cached_property
    def _stored_study(self) -> dict[str, Any]:
        """The store's study row: name, file, description, spec (``Study.model_dump``), report, code_version."""
        return self.store.study()

    @cached_property
    def study(self) -> Study:
        """The study as ``ablab run`` validated it, read back (its ``imports`` loaded first)."""
        return read_stored_study(self._stored_study["spec"], self.study_file)

    @property
    def study_file(self) -> str:
        """The spec file the study was run from, as given on the command line."""
        return self._stored_study["file"] or ""

    @cached_property
    def runs(self) -> pd.DataFrame:
        return self.store.runs()

    @cached_property
    def metrics(self) -> pd.DataFrame:
        return self.store.metrics()

    @cached_property
    def artifacts(self) -> pd.DataFrame:
        """The store's artifact index (run, name, kind, epoch, split, …), read once; empty for a store without one."""
        if not hasattr(self.store, "artifacts"):
            return pd.DataFrame(columns=["run", "name", "kind", "epoch", "split", "size", "sha256"])
        return self.store.artifacts()

    @cached_property
    def directions(self) -> dict[str, str]:
        """Metric name -> ``min``/``max`` as the evaluators declared (empty for a store without them)."""
        return self.store.directions() if hasattr(self.store, "directions") else {}

    @property
    def settings(self) -> ReportSettings:
        """The study's ``report`` block."""
        return self.study.report

    def runs_with(self, artifact: str) -> list[str]:
        """Ids of the runs that stored ``artifact``, in study order."""
        if artifact not in self._artifact_runs:
            self._artifact_runs[artifact] = [
                r for r in self.runs["run"] if Path(self.store.artifact_path(r, artifact)).is_file()]
        return self._artifact_runs[artifact]

    def artifact(self, run: str, name: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """A run's ``.npz`` artifact decoded (arrays, meta); None when missing or damaged, never a crash."""
        path = Path(self.store.artifact_path(run, name))
        if not path.is_file():
            return None
        try:
            return load_npz(str(path))
        except (OSError, ValueError, KeyError):
            return None

    # ---- files the sections write

    def figure_path(self, name: str) -> Path:
        """Where a section writes the figure ``name`` (the page links it as ``figures/<name>``)."""
        return self._file("figures", name)

    def table_path(self, name: str) -> Path:
        """Where a section writes the table file ``name`` (linked as ``tables/<name>``)."""
        return self._file("tables", name)

    def _file(self, folder: str, name: str) -> Path:
        directory = self.out / folder
        directory.mkdir(parents=True, exist_ok=True)
        return directory / name

    # ---- the final selection and its aggregate, shared by the final table, grids and best

    @cached_property
    def rule(self) -> str:
        """How each run's final value was chosen, in words."""
        return describe_selection(self._selection, self._select_on, self.directions)

    @cached_property
    def per_run(self) -> pd.DataFrame:
        """One row per run: its selected epoch and every metric's value there (``select_final``)."""
        return select_final(self.metrics, self.runs, self._selection, self._select_on, self.directions)

    @cached_property
    def recorded(self) -> list[str]:
        """Every ``split.name`` some run has a final value for."""
        return [c[: -len(".mean")] for c in self._aggregate.columns if c.endswith(".mean")]

    @cached_property
    def refs(self) -> list[str]:
        """The final table's metrics: ``report.metrics`` that were recorded, else every recorded one."""
        return [r for r in self._wanted if r in self.recorded]

    @cached_property
    def missing_refs(self) -> list[str]:
        """``report.metrics`` that no run recorded."""
        return [r for r in self._wanted if r not in self.recorded]

    @cached_property
    def agg(self) -> pd.DataFrame:
        """Mean, SD and n per variant and metric, with Δ and p per ``report.baselines`` role."""
        agg = add_baseline_deltas(self._aggregate, self.per_run, self.refs, self.baselines,
                                  pairs=self.baseline_pairs)
        agg.attrs["baselines_problems"] = self.baseline_problems
        return agg

    @cached_property
    def _aggregate(self) -> pd.DataFrame:
        return aggregate(self.per_run, by="label")

    # ---- how variants are drawn, the same in every figure and table

    @cached_property
    def baselines(self) -> dict[str, str]:
        """Role -> the baseline's name as the report shows it: the label as written, axis values as ``k=v, …``."""
        return {role: selector_text(s) for role, s in self.settings.baselines.items()}

    @cached_property
    def baseline_pairs(self) -> dict[str, dict[str, str | None]]:
        """Role -> label -> the variant it is compared with (``ablab.report.baselines``); every section uses these."""
        return self._resolved_baselines[0]

    @cached_property
    def baseline_problems(self) -> dict[str, str]:
        """Role -> why its baseline compares no variant (it names none, or gives a variant several)."""
        return self._resolved_baselines[1]

    @cached_property
    def _resolved_baselines(self) -> tuple[dict[str, dict[str, str | None]], dict[str, str]]:
        return baseline_pairs(dict(self.settings.baselines), self._rows, self._zip_groups)

    @cached_property
    def _rows(self) -> list[tuple[str, dict, dict, int]]:
        """(label, axes, resolved spec, replicate) per run, as ``ablab.report.baselines`` reads them."""
        return [(r.label, getattr(r, "axes", None) or {}, getattr(r, "spec", None) or {}, int(r.replicate))
                for r in self.runs.itertuples()]

    @cached_property
    def colours(self) -> dict[str, str]:
        if self._label_baselines:
            return variant_colours(self._labels, self.baselines)
        layout = self._families
        key = layout[0] if layout else {label: label for label in self._labels}
        return keyed_colours(self._labels, key, baseline_variants(self.baseline_pairs))

    @cached_property
    def widths(self) -> dict[str, float]:
        if self._label_baselines:
            return line_widths(self._labels, self.baselines)
        roles = baseline_variants(self.baseline_pairs)
        return {label: BASELINE_LINE_WIDTH if label in roles else LINE_WIDTH for label in self._labels}

    @cached_property
    def panels(self) -> dict[str, list[str]] | None:
        """Label → panels: one per group of other settings when a baseline has several variants."""
        if self._label_baselines:
            return curve_panels(self._labels, self.baselines)
        layout = self._families
        if layout is None or len(set(layout[1].values())) < 2:
            return None
        family, group = layout
        return Panels({label: [group[label]] for label in self._labels}, family)

    @property
    def _labels(self) -> list[str]:
        return list(self.runs["label"])

    @property
    def _label_baselines(self) -> bool:
        """Every baseline written as a label or family: figures group variants by their labels."""
        return all(isinstance(v, str) for v in self.settings.baselines.values())

    @cached_property
    def _families(self) -> tuple[dict[str, str], dict[str, str]] | None:
        return families(dict(self.settings.baselines), self.baseline_pairs, self._rows, self._zip_groups)

    @property
    def _zip_groups(self) -> list[frozenset[str]]:
        """The study's zip groups as sets of axis paths (axes that vary together)."""
        return [frozenset(group) for group in self.study.zip]

    @property
    def _selection(self) -> str:
        return self.settings.selection

    @property
    def _select_on(self) -> str:
        return self.settings.select_on

    @property
    def _wanted(self) -> list[str]:
        """``report.metrics`` as written; left at its default, those of it some run recorded (else every one)."""
        metrics = list(self.settings.metrics)
        if metrics == ReportSettings.model_fields["metrics"].default:
            return [r for r in metrics if r in self.recorded] or list(self.recorded)
        return metrics or list(self.recorded)


class ReportSection:
    """A part of the report page; subclasses are registered in ``REPORT_SECTIONS`` (``ablab.report.sections``)."""

    after: str | None = None  # one's own section: the PAGE_ORDER section it follows (None: the page's end)

    def applies(self, ctx: ReportContext) -> bool:
        """Whether the page shows this section for the study in ``ctx``."""
        return True

    def render(self, ctx: ReportContext) -> PagePart:
        raise NotImplementedError
