"""The training loop: ``train(spec) -> RunResult`` in three phases, set-up, loop and finish.

Pure with respect to the store: a spec and the files the driver hands in (the checkpoint an
``init_from`` run continues) in, numbers and artifact files out; the driver stores them. Set-up
builds the run's parts (``build_run``) and its ``TrainState``, continued and bit-changed there; the
loop knows no feature by name: a step is the run's ``objective``, a measurement an ``evaluator``
(through ``evaluation.evaluate``, the path post-hoc units take too), a recording a ``probe``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ablab import seeding
from ablab.labels import plural
from ablab.data.base import Dataset
from ablab.spec import RunSpec
from ablab.artifacts import CHECKPOINT_KIND, checkpoint_name, save_checkpoint
from ablab.train.build import RunParts, build_run, optimizer_key
from ablab.train.evaluation import Records, evaluate
from ablab.train.evaluators import correct
from ablab.train.inputs import UnitFiles
from ablab.train.result import ArtifactSink, RunResult, run_guarded
from ablab.train.state import TrainState

Progress = Callable[[int, int], None]  # (epoch done, total epochs)


def _no_progress(epoch: int, epochs: int) -> None:
    pass


@dataclass
class Training:
    """What set-up hands the loop: the run's parts and state, where records go, the epochs that save a checkpoint."""

    run: RunParts
    state: TrainState
    records: Records
    checkpoint_epochs: frozenset[int]
    info: dict  # what set-up did (continued from, bit change, kernels), stored with the run


def train(spec: RunSpec, progress: Optional[Progress] = None, run_id: Optional[str] = None,
          staging: Optional[Path] = None, files: Optional[UnitFiles] = None) -> RunResult:
    """Train one run; a non-finite loss ends it as ``diverged`` with its history so far, an error as ``failed``.

    ``staging``: where artifact files go (the driver moves them into the store); None keeps them in
    memory. ``files``: the stored files the run reads (an ``init_from`` checkpoint), from the driver.
    """
    run_id = run_id or spec.id
    sink, files = ArtifactSink(staging), files or UnitFiles()
    work = functools.partial(_train, spec, progress or _no_progress, run_id, sink, files)
    return run_guarded(run_id, spec.device, work)


def _train(spec: RunSpec, progress: Progress, run_id: str, sink: ArtifactSink, files: UnitFiles,
           started: float) -> RunResult:
    # ---- set-up: the run's parts and the state it starts from (fresh, or continued and bit-changed)
    t = set_up(spec, files, sink)
    run, state = t.run, t.state
    status = "done"
    # ---- loop: epochs of shuffled batches; metrics every k steps, evaluators and checkpoints per epoch
    with seeding.deterministic_kernels(spec.deterministic), state.stochastic_stream():
        run.model.train()
        begin(t)
        progress(state.epoch, run.duration.epochs)  # the total, known now (a steps or budget run's too)
        for epoch in range(state.epoch + 1, run.duration.epochs + 1):
            if not (_train_epoch(t, epoch) and end_epoch(t)):
                status = "diverged"
                break
            progress(epoch, run.duration.epochs)
    # ---- finish: the probes' series, the run's facts, its result
    return finish(t, status, run_id, started)


# ---------------------------------------------------------------- set-up


def set_up(spec: RunSpec, files: UnitFiles, sink: ArtifactSink, data: Optional[Dataset] = None) -> Training:
    """The run built from its spec, its state (continued from ``init_from``, bit-changed) and what it records.

    ``data``: the run's dataset already on its device (``build.place_run_data``), shared read-only by the
    replicas of a pack; None loads it."""
    run = build_run(spec, data, placed=data is not None)
    state = TrainState.create(run.model, run.optimizer, run.device, spec.seeds.model_dump(), optimizer_key(spec))
    info, source_seeds = _continue(spec, state, files)
    flip = _bit_change(spec, source_seeds)
    if flip is not None:
        info["bitflip"] = {**seeding.flip_one_weight_(run.model, flip), "epoch": state.epoch}
    info["kernels"] = seeding.kernels_record(spec.deterministic, run.device)
    epochs = run.duration.epochs
    due = {e for e in range(state.epoch, epochs + 1) if spec.checkpoint_due(e, epochs)}
    restored = {state.epoch} if spec.init_from is not None else set()  # the source's checkpoint is not saved again
    return Training(run, state, Records(sink), frozenset(due - restored), info)


def _continue(spec: RunSpec, state: TrainState, files: UnitFiles) -> tuple[dict, Optional[dict]]:
    """Restore ``state`` from the checkpoint ``init_from`` names: what was restored (for the run's info), and
    the source's seeds (None for a fresh run)."""
    src = spec.init_from
    if src is None:
        return {}, None
    checkpoint = files.checkpoint(src.run, src.epoch)
    restored = state.load_state_dict(checkpoint, f"run {src.run} epoch {src.epoch}")
    info: dict = {}
    if not restored.optimizer:
        info["optimizer_state"] = "fresh (the continuing run's optimizer or weight decay differs)"
    info["continued_from"] = {"run": src.run, "epoch": state.epoch, "restored_streams": restored.streams}
    return info, checkpoint["seeds"]


def _bit_change(spec: RunSpec, source_seeds: Optional[dict]) -> Optional[int]:
    """The bitflip seed to apply at the run's start: after initialisation, or after the restore when the
    continued run's bitflip seed differs from its source's (an equal one was applied when the source began)."""
    seed = spec.seeds.bitflip
    if source_seeds is not None and source_seeds.get("bitflip") == seed:
        return None
    return seed


# ---------------------------------------------------------------- the loop's parts
# ``begin``, ``log_batch``, ``end_epoch`` and ``finish`` are public: the packed loop (``train.packed``) records
# each of its replicas through them, so a packed run stores exactly what the run alone stores.


def _step(run: RunParts, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step: the batch augmented, the lr from the schedule, the objective's step between the
    probes; returns the batch's (detached) output and its labels as trained on."""
    for aug in run.step_augments:
        x, y = aug(x, y, state.augment)
    x = run.layout(x)
    factor = run.schedule(state.step)
    for group, lr in zip(run.optimizer.param_groups, run.base_lrs):
        group["lr"] = lr * factor
    for probe in run.probes:
        probe.before_step(state.step)
    loss, out = run.objective.step(run.model, run.forward, run.optimizer, x, y)
    state.running.add(loss)
    state.step += 1
    for probe in run.probes:
        probe.after_step(state.step, state.epoch)
    return out, y


def _train_epoch(t: Training, epoch: int) -> bool:
    """The epoch's steps (fewer when the run's last step falls in it); False when a logged loss is not finite."""
    run, state, spec = t.run, t.state, t.run.spec
    state.epoch = epoch
    split = run.data.splits["train"]
    total, every = run.duration.total_steps, spec.record.every_steps
    for idx in run.sampler.epoch(len(split), spec.batch_size, spec.drop_last, state.shuffle, run.device):
        out, y = _step(run, state, *split.rows(idx))
        if (state.step % every == 0 or state.step == total) and not log_batch(t, out, y):
            return False
        if state.step >= total:
            break
    return True


def log_batch(t: Training, out: torch.Tensor, y: torch.Tensor) -> bool:
    """The training metrics at a recording step; False when the mean loss since the last one is not finite."""
    run, step, epoch = t.run, t.state.step, t.state.epoch
    loss = t.state.running.read()
    rows = t.records.metrics
    rows.append((step, epoch, "batch", "loss", loss))
    if run.classification:
        rows.append((step, epoch, "batch", "accuracy", correct(out, y).item() / len(y)))
    rows.append((step, epoch, "batch", "lr", run.base_lrs[0] * run.schedule(step - 1)))  # the lr of that step
    return math.isfinite(loss)


def _evaluate_due(t: Training) -> bool:
    """The evaluators due at the state's epoch; False when a value is not finite."""
    run, state, rec = t.run, t.state, t.run.spec.record
    last = state.epoch == run.duration.epochs or state.step >= run.duration.total_steps
    due = [ev for ev in run.evaluators if ev.runs_at(state.epoch, last, rec.eval_every_epochs)]
    return evaluate(due, run.context, run.data.splits, rec.eval_splits, state.step, state.epoch, t.records)


def _save_due_checkpoint(t: Training) -> None:
    epoch = t.state.epoch
    if epoch in t.checkpoint_epochs:
        t.records.sink.put(checkpoint_name(epoch), save_checkpoint(t.state.state_dict()), CHECKPOINT_KIND, epoch=epoch)


def begin(t: Training) -> None:
    """Before the first step: evaluation (a non-finite start shows in the first steps' loss), the probes'
    first record, the start's checkpoint."""
    _evaluate_due(t)
    for probe in t.run.probes:
        probe.after_step(t.state.step, t.state.epoch)
    _save_due_checkpoint(t)


def end_epoch(t: Training) -> bool:
    """After an epoch: evaluation, then the checkpoint; False (no checkpoint) when a value is not finite."""
    if not _evaluate_due(t):
        return False
    _save_due_checkpoint(t)
    return True


# ---------------------------------------------------------------- finish


def finish(t: Training, status: str, run_id: str, started: float) -> RunResult:
    """The probes' series stored, the run's facts recorded: its result."""
    run, records = t.run, t.records
    for probe in run.probes:
        for name, data in probe.artifacts().items():
            records.sink.put(name, data, "probe")
    threads = f" ({plural(torch.get_num_threads(), 'thread')})" if run.device.type == "cpu" else ""
    t.info.update(run.duration.info(), parameters=sum(p.numel() for p in run.model.parameters()))
    records.directions.update({"loss": "min", "accuracy": "max"} if run.classification else {"loss": "min"})
    return RunResult(
        run_id, status, records.metrics, records.sink.artifacts, device=f"{run.device}{threads}",
        duration_s=time.time() - started, started=started, info=t.info, directions=records.directions,
    )
