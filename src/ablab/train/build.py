"""Building a unit from its spec: a training run's parts (``build_run``) and a post-hoc unit's (``build_eval``).

Both make their data, models, augmentations, loss and evaluation context with the same functions,
so a stored model is evaluated after training exactly as it was during it. Validation calls
``build_run(meta=True)`` (models on PyTorch's ``meta`` device) before a study starts.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ablab import seeding
from ablab.data.base import Dataset
from ablab.data.corrupt import corrupt_dataset
from ablab.optim.groups import apply_lr_multipliers, check_multipliers_match, create_param_groups, decoupled_decay_, group_l2_penalty
from ablab.registry import (AUGMENTATIONS, DATASETS, EVALUATORS, LOSSES, MODELS, OBJECTIVES, OPTIMIZERS, PROBES,
                            SAMPLERS, SCHEDULES)
from ablab.spec import EvalSpec, RunSpec
from ablab.train import checkpoint as ckpt
from ablab.train.compute import compact_on, make_forward, resolve_device
from ablab.train.evaluators import EvalContext, Evaluator, ModelView
from ablab.train.inputs import UnitFiles
from ablab.train.objectives import StepSetup, gradient_evaluations


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
    """Optimizer over the model's trainable parameters, grouped by the weight-decay rule and the lr multipliers."""
    wd = spec.weight_decay
    if wd.value > 0:
        params = create_param_groups(model, wd.value, wd.params, mode=wd.mode, lr_multipliers=spec.lr_multipliers)
    elif spec.lr_multipliers:  # groups by multiplier only: the optimizer's own weight_decay applies to each
        params = [{k: v for k, v in g.items() if k != "weight_decay"}
                  for g in create_param_groups(model, 0.0, "all", lr_multipliers=spec.lr_multipliers)]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.create(spec.optimizer, params=params)
    apply_lr_multipliers(optimizer)
    groups = optimizer.param_groups
    penalty = (lambda: group_l2_penalty(groups)) if wd.value > 0 and wd.mode == "l2" else None
    decouple = (lambda: decoupled_decay_(groups)) if wd.value > 0 and wd.mode == "decoupled" else None
    return Optimization(optimizer, penalty, decouple)


def optimizer_key(spec: RunSpec) -> str:
    """The optimizer state of a checkpoint is loaded by a run with the same optimizer over the same parameter
    groups; its hyperparameters (the lr, momentum) may differ: the state is a function of the gradients."""
    wd = spec.weight_decay
    key = [spec.optimizer["name"], wd.value > 0, wd.params, wd.mode]
    return json.dumps(key + [spec.lr_multipliers] if spec.lr_multipliers else key, sort_keys=True)  # the same groups


@dataclass
class Duration:
    """A run's duration, converted to steps once."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    grad_evals_per_step: int

    def info(self) -> dict:
        return {"steps": self.total_steps, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "gradient_evaluations": self.total_steps * self.grad_evals_per_step}


def build_sampler(spec: RunSpec, data: Dataset):
    """The run's sampler over its training labels (class labels for a classification task)."""
    labels = data.splits["train"].y if data.task == "classification" else None
    return SAMPLERS.create(spec.sampler, labels=labels)


def plan_duration(spec: RunSpec, n_train: int, sampler=None) -> Duration:
    """Steps from ``epochs``, ``steps`` or ``budget_epochs`` (gradient evaluations of that many plain
    epochs, divided by what one step of the objective costs); an epoch is the sampler's."""
    sampler = sampler if sampler is not None else SAMPLERS.create("iid")
    spe = sampler.steps_per_epoch(n_train, spec.batch_size, spec.drop_last)
    evals = gradient_evaluations(spec.objective)
    if spec.steps is not None:
        total = spec.steps
    elif spec.epochs is not None:
        total = spec.epochs * spe
    else:
        total = max(1, spec.budget_epochs * spe // evals)
    return Duration(spe, total, math.ceil(total / spe), evals)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@dataclass
class RunParts:
    """Everything a training run is made of, built once from its spec."""

    spec: RunSpec
    device: torch.device
    data: Dataset
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    layout: Callable[[torch.Tensor], torch.Tensor]  # a batch in the model's memory format (channels-last or as is)
    optimization: Optimization
    sampler: object
    objective: object
    base_lrs: list[float]
    duration: Duration
    schedule: Callable[[int], float]
    loss_fn: Callable
    augments: list
    probes: list
    evaluators: list[Evaluator]
    context: EvalContext
    train_augments: Optional[list] = None  # what the loop applies before the objective's step (None: ``augments``)

    @property
    def step_augments(self) -> list:
        """The augmentations the loop applies to a training batch; the objective applies the rest itself."""
        return self.augments if self.train_augments is None else self.train_augments

    @property
    def classification(self) -> bool:
        return self.data.task == "classification"

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimization.optimizer


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


def _on_device(spec: RunSpec, device: torch.device, data: Optional[Dataset] = None) -> Dataset:
    """The run's dataset on ``device`` (8-bit images kept compact where ``compact_on`` says)."""
    data = data if data is not None else load_run_data(spec)
    return data.to(device, compact=compact_on(device))


def place_run_data(spec: RunSpec) -> Dataset:
    """The run's dataset on its device, as ``build_run`` places it: what runs equal but for their seeds share."""
    return _on_device(spec, resolve_device(spec.device))


def _pixel_split(spec: RunSpec, augments: list) -> tuple[list, tuple]:
    """(what the loop applies, what the objective applies): an objective that ``takes_pixels`` (an attack in
    pixel units) gets the batch before the trailing deterministic preprocessing (``normalize``) and applies
    that itself; ValueError when that preprocessing is not the last of the augment steps."""
    if not getattr(OBJECTIVES.get(spec.objective["name"]), "takes_pixels", False):
        return augments, ()
    k = len(augments)
    while k and getattr(augments[k - 1], "at_eval", False):
        k -= 1
    if any(getattr(a, "at_eval", False) for a in augments[:k]):
        raise ValueError(f"objective '{spec.objective['name']}' attacks pixels, before the preprocessing: list "
                         "'normalize' last in augment (after any mix)")
    return augments[:k], tuple(augments[k:])


def _augmentations(spec: RunSpec, data: Dataset) -> list:
    augments = []
    for i, a in enumerate(spec.augment):
        with _part(f"augment.{i}"):
            augments.append(AUGMENTATIONS.create(a, dataset=data))
    return augments


def _eval_context(spec: RunSpec, views: list[ModelView], loss_fn, data: Dataset, augments: list, batch_size: int,
                  device: torch.device) -> EvalContext:
    """What evaluators see: the deterministic preprocessing among the augmentations (``normalize``) applies."""
    transforms = tuple(a for a in augments if getattr(a, "at_eval", False))
    return EvalContext(views, loss_fn, data.task == "classification", batch_size, spec.batch_size, transforms, device)


def _evaluators(specs: list, data: Dataset, field: str, models: Optional[int] = None) -> list[Evaluator]:
    """The evaluators, each checked against the data and, with ``models``, against that many models at once."""
    with _part(field):
        evaluators = [EVALUATORS.create(e) for e in specs]
    for i, ev in enumerate(evaluators):
        with _part(f"{field}.{i}"):
            ev.check(data)
            if models is not None and models < ev.min_members:
                raise ValueError(f"evaluator '{specs[i] if isinstance(specs[i], str) else specs[i]['name']}' needs at "
                                 f"least {ev.min_members} models; a training run has {models}: evaluate stored runs "
                                 "with it in a post-hoc study (source: …, members: pairs or groups)")
    return evaluators


def build_run(spec: RunSpec, data: Optional[Dataset] = None, meta: bool = False, placed: bool = False) -> RunParts:
    """A run's parts: data on the device, model, optimizer, objective, schedule, loss, augmentations,
    probes and evaluators. ``meta``: build the model on PyTorch's ``meta`` device (no memory, no
    time) and leave the data on the CPU, to check that everything can be built (validation).
    ``placed``: ``data`` is already on the run's device (``place_run_data``; the replicas of a pack share it).
    A part that cannot be built raises ``PartError`` naming its field."""
    device = torch.device("meta") if meta else resolve_device(spec.device)
    with _part("data"):
        if not (placed and data is not None):
            data = (data if data is not None else load_run_data(spec)) if meta else _on_device(spec, device, data)
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
    with _part("lr_multipliers"):
        check_multipliers_match(model, spec.lr_multipliers)
    with _part("optimizer"):
        opt = build_optimizer(spec, model)
    with _part("loss"):
        loss_fn = LOSSES.create(spec.loss)
    augments = _augmentations(spec, data)
    with _part("objective"):
        train_augments, transforms = _pixel_split(spec, augments)
        setup = StepSetup(model, opt.optimizer, loss_fn, opt.penalty, opt.decouple, transforms)
        objective = OBJECTIVES.create(spec.objective, setup=setup)
        if hasattr(objective, "check"):
            objective.check(data)
    with _part("sampler"):
        sampler = build_sampler(spec, data)
        sampler.check(spec.batch_size)
    with _part("schedule"):
        duration = plan_duration(spec, len(data.splits["train"]), sampler)
        schedule = SCHEDULES.create(spec.schedule, total_steps=duration.total_steps,
                                    steps_per_epoch=duration.steps_per_epoch)
        schedule(0)
    with _part("record.probes"):
        probes = [PROBES.create(p, model=model) for p in spec.record.probes]
    evaluators = _evaluators(spec.record.evaluators, data, "record.evaluators", models=1)
    context = _eval_context(spec, [ModelView(model, forward)], loss_fn, data, augments, spec.record.eval_batch_size,
                            device)
    return RunParts(
        spec=spec, device=device, data=data, model=model, forward=forward,
        layout=_channels_last if channels_last else _same, optimization=opt, sampler=sampler, objective=objective,
        base_lrs=[g["lr"] * spec.lr_scale for g in opt.optimizer.param_groups], duration=duration,
        schedule=schedule, loss_fn=loss_fn, augments=augments, probes=probes, evaluators=evaluators, context=context,
        train_augments=train_augments,
    )


@dataclass
class EvalParts:
    """A post-hoc unit's parts: its members' restored models on their data, and its evaluators."""

    spec: EvalSpec
    device: torch.device
    data: Dataset
    evaluators: list[Evaluator]
    context: EvalContext
    checkpoint_steps: list[int]  # each member's step at its checkpoint
    step: int  # where the unit's metrics are stored: the latest member checkpoint (a snapshot ensemble's last cycle)
    epoch: int


def build_eval(spec: EvalSpec, files: UnitFiles) -> EvalParts:
    """A post-hoc unit's parts: each member's model from its resolved spec, restored from its checkpoint
    (handed in by the driver), on the first member's data, evaluated as that run was."""
    device = resolve_device(spec.device)
    first: RunSpec = spec.members[0].spec
    data = _on_device(first, device)
    views, steps = [], []
    for m in spec.members:
        state = files.checkpoint(m.run, m.epoch)
        model = build_model(m.spec, data).to(device)
        ckpt.restore_model(model, state, f"run {m.run} epoch {m.epoch}")
        views.append(ModelView(model, make_forward(model, m.spec.compute, device), m.label))
        steps.append(int(state["step"]))
    context = _eval_context(first, views, LOSSES.create(first.loss), data, _augmentations(first, data),
                            spec.eval_batch_size, device)
    last = max(range(len(steps)), key=lambda i: spec.members[i].epoch)
    return EvalParts(spec, device, data, _evaluators(spec.evaluators, data, "evaluators"), context, steps,
                     steps[last], spec.members[last].epoch)
