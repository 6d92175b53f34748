"""Post-hoc units: stored checkpoints evaluated without training, and the one entry point for a unit.

``evaluate_unit(EvalSpec, files)`` restores each member's model from the checkpoint the driver
handed in (``build_eval``), and runs the unit's evaluators once on its splits through the same
``evaluate`` the training loop calls. Its metrics are stored like a training run's, at the
checkpoint's step and epoch.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Optional

from ablab import seeding
from ablab.registry import EVALUATORS
from ablab.spec import EvalSpec, UnitSpec
from ablab.train.build import build_eval
from ablab.train.evaluation import Records, evaluate
from ablab.train.inputs import UnitFiles
from ablab.train.loop import Progress, train
from ablab.train.result import ArtifactSink, RunResult, run_guarded


def run_unit(spec: UnitSpec, progress: Optional[Progress] = None, run_id: Optional[str] = None,
             staging: Optional[Path] = None, files: Optional[UnitFiles] = None) -> RunResult:
    """Train a ``RunSpec`` or evaluate an ``EvalSpec``: what an executor's worker calls."""
    if isinstance(spec, EvalSpec):
        return evaluate_unit(spec, run_id=run_id, staging=staging, files=files)
    return train(spec, progress=progress, run_id=run_id, staging=staging, files=files)


def evaluate_unit(spec: EvalSpec, run_id: Optional[str] = None, staging: Optional[Path] = None,
                  files: Optional[UnitFiles] = None) -> RunResult:
    """Evaluate the unit's stored checkpoints (``files``, from the driver); an error is a ``failed`` result."""
    run_id = run_id or spec.id
    work = functools.partial(_evaluate, spec, run_id, ArtifactSink(staging), files or UnitFiles())
    return run_guarded(run_id, spec.device, work)


def check_members(spec: EvalSpec) -> None:
    """The unit's members share a dataset and the evaluators accept that many models (ValueError)."""
    first = spec.members[0].spec
    for m in spec.members[1:]:
        if (m.spec.data, m.spec.corrupt) != (first.data, first.corrupt):
            raise ValueError(f"members '{spec.members[0].label}' and '{m.label}' were trained on different data; "
                             "a unit evaluates its members on one dataset")
    for e in spec.evaluators:
        factory = EVALUATORS.get(e["name"])
        if len(spec.members) < factory.min_members:
            raise ValueError(f"evaluator '{e['name']}' needs at least {factory.min_members} models; a unit here has "
                             f"{len(spec.members)} (members: pairs or groups)")
        wanted = factory.members
        if wanted is not None and wanted != len(spec.members):
            raise ValueError(f"evaluator '{e['name']}' evaluates {wanted} model(s) at a time; a unit here has "
                             f"{len(spec.members)} (members: single for it, or an evaluator for pairs/groups)")


def _evaluate(spec: EvalSpec, run_id: str, sink: ArtifactSink, files: UnitFiles, started: float) -> RunResult:
    check_members(spec)
    unit = build_eval(spec, files)
    records = Records(sink)
    with seeding.deterministic_kernels(spec.deterministic):
        for ev in unit.evaluators:  # one at a time: a value that is not finite ends a training run, not a unit
            evaluate([ev], unit.context, unit.data.splits, spec.eval_splits, unit.step, unit.epoch, records)
    info = {"members": [m.run for m in spec.members], "epochs": unit.epoch, "checkpoint_steps": unit.checkpoint_steps,
            "member_epochs": [m.epoch for m in spec.members]}
    return RunResult(run_id, "done", records.metrics, sink.artifacts, device=str(unit.device),
                     duration_s=time.time() - started, started=started, info=info, directions=records.directions)
