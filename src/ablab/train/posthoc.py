"""Post-hoc units: stored checkpoints evaluated without training, and the one entry point for a run.

``evaluate_unit(EvalSpec)`` loads each member's checkpoint from the source study (read-only),
rebuilds its model from the member's resolved spec, and runs the unit's evaluators once on
its splits. Its metrics are stored like a training run's, at the checkpoint's step and epoch.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Optional

from ablab import seeding
from ablab.artifacts import load_checkpoint
from ablab.registry import AUGMENTATIONS, EVALUATORS, LOSSES
from ablab.spec import EvalSpec, RunSpec, UnitSpec
from ablab.train import checkpoint as ckpt
from ablab.train.compute import compact_on, make_forward, resolve_device
from ablab.train.evaluators import EvalContext, ModelView
from ablab.train.loop import Progress, build_model, load_run_data, train
from ablab.train.result import ArtifactSink, MetricRow, RunResult


def run_unit(spec: UnitSpec, progress: Optional[Progress] = None, run_id: Optional[str] = None,
             staging: Optional[Path] = None, study_dir: Optional[Path] = None) -> RunResult:
    """Train a ``RunSpec`` or evaluate an ``EvalSpec``: what an executor's worker calls."""
    if isinstance(spec, EvalSpec):
        return evaluate_unit(spec, run_id=run_id, staging=staging)
    return train(spec, progress=progress, run_id=run_id, staging=staging, study_dir=study_dir)


def evaluate_unit(spec: EvalSpec, run_id: Optional[str] = None, staging: Optional[Path] = None) -> RunResult:
    """Evaluate the unit's stored checkpoints; an error is a ``failed`` result with its traceback."""
    started = time.time()
    run_id = run_id or spec.id
    try:
        return _evaluate(spec, run_id, started, ArtifactSink(staging))
    except Exception:  # noqa: BLE001
        return RunResult(run_id, "failed", error=traceback.format_exc(), device=spec.device,
                         duration_s=time.time() - started, started=started)


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


def _evaluate(spec: EvalSpec, run_id: str, started: float, sink: ArtifactSink) -> RunResult:
    from ablab.store import Store

    check_members(spec)
    device = resolve_device(spec.device)
    first: RunSpec = spec.members[0].spec
    data = load_run_data(first).to(device, compact=compact_on(device))
    source = Store.open(spec.source_study, readonly=True)
    views, steps = [], []
    try:
        for m in spec.members:
            state = load_checkpoint(source.read_checkpoint_bytes(m.run, m.epoch))
            model = build_model(m.spec, data).to(device)
            ckpt.restore_model(model, state, f"run {m.run} epoch {m.epoch}")
            views.append(ModelView(model, make_forward(model, m.spec.compute, device), m.label))
            steps.append(int(state["step"]))
    finally:
        source.close()
    augments = [AUGMENTATIONS.create(a, dataset=data) for a in first.augment]
    ctx = EvalContext(views, LOSSES.create(first.loss), data.task == "classification", spec.eval_batch_size,
                      first.batch_size, tuple(a for a in augments if getattr(a, "at_eval", False)), device)
    last = max(range(len(steps)), key=lambda i: spec.members[i].epoch)  # a snapshot ensemble: its last cycle
    epoch, step = spec.members[last].epoch, steps[last]
    metrics: list[MetricRow] = []
    directions: dict[str, str] = {}
    with seeding.deterministic_kernels(spec.deterministic):
        for e in spec.evaluators:
            ev = EVALUATORS.create(e)
            ev.check(data)
            directions.update(ev.directions(ctx.classification))
            for split_name in ev.splits_for(spec.eval_splits):
                if split_name not in data.splits:
                    raise ValueError(f"the members' dataset has no '{split_name}' split (has {', '.join(data.splits)})")
                result = ev.evaluate(ctx, split_name, data.splits[split_name], epoch)
                metrics.extend((step, epoch, split_name, name, value) for name, value in result.metrics.items())
                for name, (kind, blob) in result.artifacts.items():
                    sink.put(name, blob, kind, epoch=epoch, split=split_name)
    info = {"members": [m.run for m in spec.members], "epochs": epoch, "checkpoint_steps": steps,
            "member_epochs": [m.epoch for m in spec.members]}
    return RunResult(run_id, "done", metrics, sink.artifacts, device=str(device), duration_s=time.time() - started,
                     started=started, info=info, directions=directions)
