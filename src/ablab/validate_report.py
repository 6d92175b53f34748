"""Validation of a study's ``report`` block against what its runs will record, before the first run.

The metrics a run records are known from its spec: each evaluator's declared metric names
(``Evaluator.directions``) on the splits it evaluates, plus ``batch.loss``, ``batch.lr`` and (for
classification) ``batch.accuracy`` from the training loop. A report that names anything else, a
baseline that names no variant or gives a variant several (``ablab.report.baselines``), or a ``best.baseline`` on a key that no axis sets would only show
up after the last run; here it is one ``SpecError``.
"""

from __future__ import annotations

from typing import Any

from ablab.errors import SpecError
from ablab.spec import Study, Variant


def recorded_by(evaluators: list, eval_splits: list[str], classification: bool | None, training: bool) -> set[str]:
    """``split.name`` of every metric a run (``training``) or a post-hoc unit records.

    ``classification`` None (a post-hoc unit, whose task is its members'): names of either task.
    """
    tasks = [True, False] if classification is None else [classification]
    names = {f"{split}.{name}" for ev in evaluators for split in ev.splits_for(eval_splits)
             for task in tasks for name in ev.directions(task)}
    if training:
        names |= {"batch.loss", "batch.lr"} | ({"batch.accuracy"} if classification else set())
    return names


def check_report(study: Study, variants: list[Variant], recorded: set[str], file: str) -> None:
    """One ``SpecError`` for the first report setting that names a metric, variant or axis the study lacks."""
    report = study.report
    written = report.model_fields_set
    refs: list[tuple[str, str]] = []
    for field in ("metrics", "curves"):
        if field in written:
            refs += [(f"report.{field}.{i}", ref) for i, ref in enumerate(getattr(report, field))]
    if "select_on" in written or report.selection == "best":
        refs.append(("report.select_on", report.select_on))
    refs += [(f"report.grids.{i}.metric", g.metric) for i, g in enumerate(report.grids)]
    if report.best is not None:
        refs.append(("report.best.metric", report.best.metric))
    for field, ref in refs:
        if ref not in recorded:
            raise SpecError(_unrecorded(ref, recorded), file=file, field=field)
    _check_baselines(study, variants, file)


def _unrecorded(ref: str, recorded: set[str]) -> str:
    from ablab.registry import closest_names

    split, _, name = ref.partition(".")
    if any(r.endswith(f".{name}") for r in recorded) and not any(r.startswith(f"{split}.") for r in recorded):
        why = f" (no evaluator runs on the '{split}' split: add it to record.eval_splits)"
    else:
        why = ""
    return f"no run records '{ref}'{why}.{closest_names(ref, sorted(recorded))}"


def _rows(variants: list[Variant]) -> list[tuple[str, dict, dict, int]]:
    return [(v.label, v.axes, v.spec.model_dump(mode="json"), v.replicate) for v in variants]


def _check_baselines(study: Study, variants: list[Variant], file: str) -> None:
    from ablab.report.baselines import check_baseline
    from ablab.selectors import matches

    rows = _rows(variants)
    linked = [frozenset(group) for group in study.zip]
    for role, selector in study.report.baselines.items():
        try:
            check_baseline(selector, rows, linked)
        except ValueError as err:
            raise SpecError(str(err), file=file, field=f"report.baselines.{role}") from None
    best = study.report.best
    if best is None or best.baseline is None:
        return
    axes = [a for a in study.axes if a != "label"]
    for key in best.baseline:
        if key != "label" and not any(key == a or key.startswith(a + ".") for a in axes):
            raise SpecError(f"'{key}' is not an axis of the study, so every variant has the same value there "
                            f"(axes: {', '.join(axes) or 'none'})", file=file, field=f"report.best.baseline.{key}")
    if not any(matches(best.baseline, axes=axes_, spec=spec, label=label, replicate=rep)
               for label, axes_, spec, rep in rows):
        raise SpecError(f"{_text(best.baseline)} matches no variant", file=file, field="report.best.baseline")


def _text(selector: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in selector.items()) + "}"
