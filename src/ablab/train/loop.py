"""The training loop: one explicit function, ``train(spec) -> RunResult``.

Pure with respect to the store: a spec (and data) in, numbers and artifact files out; the driver
stores them. The loop knows no feature by name: a step is the run's ``objective``, a measurement
an ``evaluator``, a recording a ``probe``. ``build_run`` assembles a run's parts; validation
calls the same function (models on the ``meta`` device) before a study starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ablab import seeding
from ablab.artifacts import checkpoint_name, load_checkpoint
from ablab.data.base import Dataset, Split
from ablab.data.corrupt import corrupt_dataset
from ablab.data.sampler import iterate_batches, steps_per_epoch
from ablab.optim.groups import create_param_groups, decoupled_decay_, group_l2_penalty
from ablab.registry import AUGMENTATIONS, DATASETS, EVALUATORS, LOSSES, MODELS, OBJECTIVES, OPTIMIZERS, PROBES, SCHEDULES
from ablab.spec import RunSpec
from ablab.train import checkpoint as ckpt
from ablab.train.compute import compact_on, make_forward, resolve_device  # noqa: F401  (re-exported)
from ablab.train.evaluators import EvalContext, Evaluator, ModelView, correct, loss_and_score
from ablab.train.objectives import Standard, StepSetup, gradient_evaluations
from ablab.train.result import ArtifactSink, MetricRow, RunResult

Progress = Callable[[int, int], None]  # (epoch done, total epochs)


# ---------------------------------------------------------------- building a run


def load_dataset(spec: dict) -> Dataset:
    """The dataset of a run's ``data`` component (CPU tensors; loaders cache per process)."""
    return DATASETS.create(spec)


def load_run_data(spec: RunSpec) -> Dataset:
    """The run's dataset with its randomisation test (``corrupt``) applied, still on the CPU."""
    c = spec.corrupt
    return corrupt_dataset(load_dataset(spec.data), c.label_fraction, c.shuffle_pixels, c.seed)


def build_model(spec: RunSpec, data: Dataset) -> nn.Module:
    """The model, initialised from the run's ``init`` stream (on the CPU, so every device agrees)."""
    with seeding.init_scope(spec.seeds.init):
        return MODELS.create(spec.model, in_shape=tuple(data.in_shape), out_dim=data.out_dim)


@dataclass
class Optimization:
    """The optimizer and where the run's weight decay acts."""

    optimizer: torch.optim.Optimizer
    penalty: Optional[Callable[[], torch.Tensor]] = None  # ``l2`` mode: added to the loss
    decouple: Optional[Callable[[], None]] = None  # ``decoupled`` mode: applied before each step


def build_optimizer(spec: RunSpec, model: nn.Module) -> Optimization:
    """Optimizer over the model's trainable parameters, grouped by the weight-decay rule."""
    wd = spec.weight_decay
    if wd.value > 0:
        params = create_param_groups(model, wd.value, wd.params, mode=wd.mode)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.create(spec.optimizer, params=params)
    groups = optimizer.param_groups
    penalty = (lambda: group_l2_penalty(groups)) if wd.value > 0 and wd.mode == "l2" else None
    decouple = (lambda: decoupled_decay_(groups)) if wd.value > 0 and wd.mode == "decoupled" else None
    return Optimization(optimizer, penalty, decouple)


@dataclass
class Plan:
    """A run's duration, converted to steps once."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    grad_evals_per_step: int

    def info(self) -> dict:
        return {"steps": self.total_steps, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "gradient_evaluations": self.total_steps * self.grad_evals_per_step}


def plan_duration(spec: RunSpec, n_train: int) -> Plan:
    """Steps from ``epochs``, ``steps`` or ``budget_epochs`` (gradient evaluations of that many plain
    epochs, divided by what one step of the objective costs)."""
    spe = steps_per_epoch(n_train, spec.batch_size, spec.drop_last)
    evals = gradient_evaluations(spec.objective)
    if spec.steps is not None:
        total = spec.steps
    elif spec.epochs is not None:
        total = spec.epochs * spe
    else:
        total = max(1, spec.budget_epochs * spe // evals)
    return Plan(spe, total, math.ceil(total / spe), evals)


@dataclass
class RunParts:
    """Everything a run is made of, built once from its spec."""

    spec: RunSpec
    device: torch.device
    data: Dataset
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool
    optimization: Optimization
    objective: object
    base_lrs: list[float]
    plan: Plan
    schedule: Callable[[int], float]
    loss_fn: Callable
    augments: list
    eval_transforms: tuple
    probes: list
    evaluators: list[Evaluator]

    @property
    def classification(self) -> bool:
        return self.data.task == "classification"

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimization.optimizer

    def eval_context(self) -> EvalContext:
        rec = self.spec.record
        return EvalContext([ModelView(self.model, self.forward)], self.loss_fn, self.classification,
                           rec.eval_batch_size, self.spec.batch_size, self.eval_transforms, self.device)


class PartError(Exception):
    """A run part could not be built: ``field`` is where in the run spec (``model``, ``augment.1``)."""

    def __init__(self, field: str, cause: Exception):
        super().__init__(f"{field}: {cause}")
        self.field, self.cause = field, cause


@contextlib.contextmanager
def _part(field: str) -> Iterator[None]:
    try:
        yield
    except Exception as err:  # noqa: BLE001  (re-raised with the spec field it belongs to)
        raise PartError(field, err) from err


def build_run(spec: RunSpec, data: Optional[Dataset] = None, meta: bool = False) -> RunParts:
    """A run's parts: data on the device, model, optimizer, objective, schedule, loss, augmentations,
    probes and evaluators. ``meta``: build the model on PyTorch's ``meta`` device (no memory, no
    time) and leave the data on the CPU, to check that everything can be built (validation).
    A part that cannot be built raises ``PartError`` naming its field."""
    device = torch.device("meta") if meta else resolve_device(spec.device)
    with _part("data"):
        data = data if data is not None else load_run_data(spec)
        if not meta:
            data = data.to(device, compact=compact_on(device))
    with _part("model"):
        if meta:
            with torch.device("meta"):
                model = MODELS.create(spec.model, in_shape=tuple(data.in_shape), out_dim=data.out_dim)
        else:
            model = build_model(spec, data).to(device)
    if spec.seeds.bitflip is not None:
        with _part("seeds.bitflip"):
            seeding.first_weight(model)
    channels_last = spec.compute.channels_last and len(data.in_shape) == 3 and not meta
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = model if meta else make_forward(model, spec.compute, device)
    with _part("optimizer"):
        opt = build_optimizer(spec, model)
    with _part("loss"):
        loss_fn = LOSSES.create(spec.loss)
    with _part("objective"):
        setup = StepSetup(model, opt.optimizer, loss_fn, opt.penalty, opt.decouple)
        objective = OBJECTIVES.create(spec.objective, setup=setup)
    base_lrs = [g["lr"] * spec.lr_scale for g in opt.optimizer.param_groups]
    with _part("schedule"):
        plan = plan_duration(spec, len(data.splits["train"]))
        schedule = SCHEDULES.create(spec.schedule, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
        schedule(0)
    augments = []
    for i, a in enumerate(spec.augment):
        with _part(f"augment.{i}"):
            augments.append(AUGMENTATIONS.create(a, dataset=data))
    with _part("record.probes"):
        probes = [PROBES.create(p, model=model) for p in spec.record.probes]
    with _part("record.evaluators"):
        evaluators = [EVALUATORS.create(e) for e in spec.record.evaluators]
    for i, ev in enumerate(evaluators):
        with _part(f"record.evaluators.{i}"):
            ev.check(data)
    return RunParts(
        spec=spec, device=device, data=data, model=model, forward=forward, channels_last=channels_last,
        optimization=opt, objective=objective, base_lrs=base_lrs, plan=plan, schedule=schedule, loss_fn=loss_fn,
        augments=augments, eval_transforms=tuple(a for a in augments if getattr(a, "at_eval", False)),
        probes=probes, evaluators=evaluators,
    )


# ---------------------------------------------------------------- the loop


class _Running:
    """Training metrics between recordings, kept on the device: one host sync per read.

    Loss: the mean over every step since the last read (one add per step). Accuracy: of the
    batch at the recording step only; scoring every batch costs ~5 % of a small MLP's step.
    """

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.batches = 0

    def add(self, loss: torch.Tensor) -> None:
        self.loss += loss.detach()
        self.batches += 1

    def read(self) -> float:
        loss = self.loss.item() / self.batches
        self.loss.zero_()
        self.batches = 0
        return loss


def evaluate(
    model: nn.Module, split: Split, loss_fn, classification: bool, batch_size: int, transforms: tuple = (),
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> dict[str, float]:
    """Mean loss (and accuracy, or MSE for regression) over every example of a split (the ``standard``
    evaluator's measurement)."""
    return loss_and_score(forward or model, model, split, loss_fn, classification, batch_size, transforms)


def train_step(model, optimizer, loss_fn, x, y, penalty=None, decouple=None, forward=None):
    """One plain optimizer step (the ``standard`` objective) on a batch; returns (loss, output)."""
    step = Standard(StepSetup(model, optimizer, loss_fn, penalty, decouple))
    return step.step(model, forward or model, optimizer, x, y)


def train(spec: RunSpec, progress: Optional[Progress] = None, run_id: Optional[str] = None,
          staging: Optional[Path] = None, study_dir: Optional[Path] = None) -> RunResult:
    """Train one run; a non-finite loss ends it as ``diverged`` with its history so far.

    ``staging``: where artifact files go (the driver moves them into the store); None keeps them in
    memory. ``study_dir``: the results directory of the run's study, for an ``init_from`` in it.
    """
    started = time.time()
    run_id = run_id or spec.id
    try:
        return _train(spec, progress, run_id, started, ArtifactSink(staging), study_dir)
    except Exception:  # noqa: BLE001  (a run that raises is a result: failed, with its traceback)
        return RunResult(
            run_id, "failed", error=traceback.format_exc(), device=spec.device,
            duration_s=time.time() - started, started=started,
        )


def _source_checkpoint(spec: RunSpec, study_dir: Optional[Path]) -> dict:
    from ablab.store import Store

    src = spec.init_from
    where = src.study or study_dir
    if where is None:
        raise ValueError("init_from names a run of this study: train() needs study_dir")
    store = Store.open(where, readonly=True)
    try:
        return load_checkpoint(store.read_checkpoint_bytes(src.run, src.epoch))
    finally:
        store.close()


def _train(spec: RunSpec, progress: Optional[Progress], run_id: str, started: float, sink: ArtifactSink,
           study_dir: Optional[Path]) -> RunResult:
    # ---- set-up: the run's parts, its random streams, and the state it continues from
    run = build_run(spec)
    device, model, optimizer, plan, rec = run.device, run.model, run.optimizer, run.plan, spec.record
    train_split = run.data.splits["train"]
    shuffle_gen = seeding.create_generator("shuffle", spec.seeds.shuffle)
    augment_gen = seeding.create_generator("augment", spec.seeds.augment, device)
    running = _Running(device)
    step = epoch0 = 0
    stochastic = None
    info: dict = {}
    seeds = spec.seeds.model_dump()
    if spec.init_from is not None:
        state = _source_checkpoint(spec, study_dir)
        ckpt.restore_model(model, state, f"run {spec.init_from.run} epoch {spec.init_from.epoch}")
        if state.get("optimizer_spec") == _optimizer_key(spec):
            optimizer.load_state_dict(state["optimizer"])
        else:
            info["optimizer_state"] = "fresh (the continuing run's optimizer or weight decay differs)"
        keep = ckpt.kept_streams(state["seeds"], seeds)
        stochastic = ckpt.restore_generators(state, keep, shuffle_gen, augment_gen, device)
        running.loss.copy_(state["running"]["loss"])
        running.batches = state["running"]["batches"]
        step, epoch0 = state["step"], state["epoch"]
        info["continued_from"] = {"run": spec.init_from.run, "epoch": epoch0, "restored_streams": sorted(keep)}
    flip = _bit_change(spec, state["seeds"] if spec.init_from is not None else None)
    if flip is not None:
        info["bitflip"] = {**seeding.flip_one_weight_(model, flip), "epoch": epoch0}
    info["kernels"] = seeding.kernels_record(spec.deterministic, device)
    metrics: list[MetricRow] = []
    directions: dict[str, str] = {}
    ctx = run.eval_context()
    status = "done"

    def run_evaluators(epoch: int) -> bool:
        """Every evaluator due after ``epoch``; False when a value is not finite (diverged)."""
        finite = True
        last = epoch == plan.epochs or step >= plan.total_steps
        for ev in run.evaluators:
            if not ev.runs_at(epoch, last, rec.eval_every_epochs):
                continue
            directions.update(ev.directions(ctx.classification))
            for split_name in ev.splits_for(rec.eval_splits):
                result = ev.evaluate(ctx, split_name, run.data.splits[split_name], epoch)
                for name, value in result.metrics.items():
                    metrics.append((step, epoch, split_name, name, value))
                    finite &= math.isfinite(value)
                for name, (kind, data) in result.artifacts.items():
                    sink.put(name, data, kind, epoch=epoch, split=split_name)
            if not finite:
                break
        return finite

    def save_checkpoint(epoch: int) -> None:
        if spec.checkpoint_due(epoch, plan.epochs) and not (spec.init_from is not None and epoch == epoch0):
            sink.put(checkpoint_name(epoch), ckpt.capture(
                model=model, optimizer=optimizer, step=step, epoch=epoch, seeds=seeds, shuffle=shuffle_gen,
                augment=augment_gen, device=device, running=(running.loss, running.batches),
                optimizer_spec=_optimizer_key(spec)), "checkpoint", epoch=epoch)

    # ---- loop: epochs of shuffled batches; metrics every k steps, evaluators and checkpoints per epoch
    with seeding.deterministic_kernels(spec.deterministic), seeding.stochastic_scope(spec.seeds.stochastic, device):
        if stochastic is not None:
            ckpt.set_stochastic_state(stochastic, device)
        model.train()
        run_evaluators(epoch0)  # a non-finite start shows in the first steps' loss
        for probe in run.probes:
            probe.after_step(step, epoch0)
        save_checkpoint(epoch0)
        for epoch in range(epoch0 + 1, plan.epochs + 1):
            if status == "diverged":
                break
            for idx in iterate_batches(len(train_split), spec.batch_size, spec.drop_last, shuffle_gen, device):
                x, y = train_split.rows(idx)
                for aug in run.augments:
                    x, y = aug(x, y, augment_gen)
                if run.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                factor = run.schedule(step)
                for group, lr in zip(optimizer.param_groups, run.base_lrs):
                    group["lr"] = lr * factor
                for probe in run.probes:
                    probe.before_step(step)
                loss, out = run.objective.step(model, run.forward, optimizer, x, y)
                running.add(loss)
                step += 1
                for probe in run.probes:
                    probe.after_step(step, epoch)
                if step % rec.every_steps == 0 or step == plan.total_steps:
                    batch_loss = running.read()
                    metrics.append((step, epoch, "batch", "loss", batch_loss))
                    if run.classification:
                        metrics.append((step, epoch, "batch", "accuracy", correct(out, y).item() / len(y)))
                    metrics.append((step, epoch, "batch", "lr", run.base_lrs[0] * factor))
                    if not math.isfinite(batch_loss):
                        status = "diverged"
                        break
                if step >= plan.total_steps:
                    break
            if status == "diverged":
                break
            if not run_evaluators(epoch):
                status = "diverged"
                break
            save_checkpoint(epoch)
            if progress is not None:
                progress(epoch, plan.epochs)

    for probe in run.probes:
        for name, data in probe.artifacts().items():
            sink.put(name, data, "probe")
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    info.update(plan.info(), parameters=sum(p.numel() for p in model.parameters()))
    directions.update({"loss": "min", "accuracy": "max"} if run.classification else {"loss": "min"})
    return RunResult(
        run_id, status, metrics, sink.artifacts, device=f"{device}{threads}",
        duration_s=time.time() - started, started=started, info=info, directions=directions,
    )


def _bit_change(spec: RunSpec, source_seeds: Optional[dict]) -> Optional[int]:
    """The bitflip seed to apply at the run's start: after initialisation, or after the restore when the
    continued run's bitflip seed differs from its source's (an equal one was applied when the source began)."""
    seed = spec.seeds.bitflip
    if source_seeds is not None and source_seeds.get("bitflip") == seed:
        return None
    return seed


def _optimizer_key(spec: RunSpec) -> str:
    """The optimizer state of a checkpoint is loaded by a run with the same optimizer over the same parameter
    groups; its hyperparameters (the lr, momentum) may differ: the state is a function of the gradients."""
    wd = spec.weight_decay
    return json.dumps([spec.optimizer["name"], wd.value > 0, wd.params, wd.mode], sort_keys=True)
