"""The training loop: one explicit function, ``train(spec) -> RunResult``.

Pure with respect to the store: a spec (and data) in, numbers out. The driver stores them.
"""

from __future__ import annotations

import io
import math
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ablab import seeding
from ablab.data.base import Dataset, Split
from ablab.analysis.sharpness import hessian_top_eigenvalue, sam_sharpness
from ablab.data.corrupt import corrupt_dataset
from ablab.data.sampler import iterate_batches, steps_per_epoch
from ablab.optim.groups import create_param_groups, decoupled_decay_, group_l2_penalty, is_norm_module
from ablab.optim.sam import SAM, bn_running_stats_frozen
from ablab.registry import AUGMENTATIONS, DATASETS, LOSSES, MODELS, OPTIMIZERS, PROBES, SCHEDULES
from ablab.spec import RunSpec
from ablab.train.compute import compact_on, make_forward, resolve_device
from ablab.train.result import MetricRow, RunResult

Progress = Callable[[int, int], None]  # (epoch done, total epochs)


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
    """The optimizer (SAM-wrapped or not) and where the run's weight decay acts."""

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
    if spec.sam is not None:
        flat = [p for g in optimizer.param_groups for p in g["params"]]
        optimizer = SAM(flat, optimizer, rho=spec.sam.rho, adaptive=spec.sam.adaptive, eta=spec.sam.eta)
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
    """Steps from ``epochs``, ``steps`` or ``budget_epochs`` (gradient evaluations of that many plain epochs)."""
    spe = steps_per_epoch(n_train, spec.batch_size, spec.drop_last)
    evals = 2 if spec.sam is not None else 1
    if spec.steps is not None:
        total = spec.steps
    elif spec.epochs is not None:
        total = spec.epochs * spe
    else:
        total = max(1, spec.budget_epochs * spe // evals)
    return Plan(spe, total, math.ceil(total / spe), evals)


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


def _correct(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    labels = y.argmax(dim=-1) if y.is_floating_point() else y
    return (output.argmax(dim=-1) == labels).sum()


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, loss_fn, classification: bool, batch_size: int, transforms: tuple = (),
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> dict[str, float]:
    """Mean loss (and accuracy, or MSE for regression) over every example of a split.

    ``transforms``: the deterministic preprocessing steps among the augmentations (``normalize``).
    """
    forward = forward or model
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device, dtype=torch.float64)
    extra = torch.zeros((), device=split.x.device, dtype=torch.float64)
    n = len(split)
    for start in range(0, n, batch_size):
        x, y = split.rows(slice(start, start + batch_size))
        for transform in transforms:
            x, y = transform(x, y, None)
        out = forward(x)
        loss_sum += loss_fn(out, y).double() * len(x)
        if classification:
            extra += _correct(out, y)
        else:
            extra += torch.nn.functional.mse_loss(out, y.reshape(out.shape).to(out.dtype), reduction="sum").double() / out[0].numel()
    model.train()
    if n == 0:
        return {}
    name = "accuracy" if classification else "mse"
    return {"loss": (loss_sum / n).item(), name: (extra / n).item()}


def train(spec: RunSpec, progress: Optional[Progress] = None, run_id: Optional[str] = None) -> RunResult:
    """Train one run; a non-finite loss ends it as ``diverged`` with its history so far."""
    started = time.time()
    run_id = run_id or spec.id
    try:
        return _train(spec, progress, run_id, started)
    except Exception:  # noqa: BLE001  (a run that raises is a result: failed, with its traceback)
        return RunResult(
            run_id, "failed", error=traceback.format_exc(), device=spec.device,
            duration_s=time.time() - started, started=started,
        )


def _train(spec: RunSpec, progress: Optional[Progress], run_id: str, started: float) -> RunResult:
    # ---- set-up: device, data, model, optimizer, schedule, loss
    device = resolve_device(spec.device)
    data = load_run_data(spec).to(device, compact=compact_on(device))
    classification = data.task == "classification"
    train_split = data.splits["train"]
    model = build_model(spec, data).to(device)
    channels_last = spec.compute.channels_last and len(data.in_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = make_forward(model, spec.compute, device)
    opt = build_optimizer(spec, model)
    optimizer = opt.optimizer
    base_lrs = [g["lr"] * spec.lr_scale for g in optimizer.param_groups]
    plan = plan_duration(spec, len(train_split))
    schedule = SCHEDULES.create(spec.schedule, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
    loss_fn = LOSSES.create(spec.loss)
    augments = [AUGMENTATIONS.create(a, dataset=data) for a in spec.augment]
    eval_transforms = tuple(a for a in augments if getattr(a, "at_eval", False))
    probes = [PROBES.create(p, model=model) for p in spec.record.probes]
    shuffle_gen = seeding.create_generator("shuffle", spec.seeds.shuffle)
    augment_gen = seeding.create_generator("augment", spec.seeds.augment, device)
    rec = spec.record
    metrics: list[MetricRow] = []
    status = "done"

    def record_eval(step: int, epoch: int) -> bool:
        finite = True
        for split_name in rec.eval_splits:
            for name, value in evaluate(
                model, data.splits[split_name], loss_fn, classification, rec.eval_batch_size, eval_transforms, forward
            ).items():
                metrics.append((step, epoch, split_name, name, value))
                finite &= math.isfinite(value)
        return finite

    # ---- loop: epochs of shuffled batches; metrics every k steps and every epoch
    with seeding.deterministic_kernels(spec.deterministic), seeding.stochastic_scope(spec.seeds.stochastic, device):
        model.train()
        record_eval(0, 0)
        for probe in probes:
            probe.after_step(0, 0)
        running = _Running(device)
        step = 0
        for epoch in range(1, plan.epochs + 1):
            for idx in iterate_batches(len(train_split), spec.batch_size, spec.drop_last, shuffle_gen, device):
                x, y = train_split.rows(idx)
                for aug in augments:
                    x, y = aug(x, y, augment_gen)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                factor = schedule(step)
                for group, lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = lr * factor
                for probe in probes:
                    probe.before_step(step)
                loss, out = train_step(model, optimizer, loss_fn, x, y, opt.penalty, opt.decouple, forward)
                running.add(loss)
                step += 1
                for probe in probes:
                    probe.after_step(step, epoch)
                if step % rec.every_steps == 0 or step == plan.total_steps:
                    batch_loss = running.read()
                    metrics.append((step, epoch, "batch", "loss", batch_loss))
                    if classification:
                        metrics.append((step, epoch, "batch", "accuracy", _correct(out, y).item() / len(y)))
                    metrics.append((step, epoch, "batch", "lr", base_lrs[0] * factor))
                    if not math.isfinite(batch_loss):
                        status = "diverged"
                        break
                if step >= plan.total_steps:
                    break
            if status == "diverged":
                break
            if epoch % rec.eval_every_epochs == 0 or step >= plan.total_steps:
                if not record_eval(step, epoch):
                    status = "diverged"
                    break
            if progress is not None:
                progress(epoch, plan.epochs)

    if spec.record.sharpness is not None and status == "done":
        metrics.extend(_sharpness(spec, model, train_split, loss_fn, eval_transforms, step, plan.epochs))
    artifacts = {}
    for probe in probes:
        artifacts.update(probe.artifacts())
    if rec.checkpoint and status == "done":
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        artifacts["model.pt"] = buf.getvalue()
    threads = f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
    info = {**plan.info(), "parameters": sum(p.numel() for p in model.parameters())}
    return RunResult(
        run_id, status, metrics, artifacts, device=f"{device}{threads}",
        duration_s=time.time() - started, started=started, info=info,
    )


def _sharpness(spec: RunSpec, model, split: Split, loss_fn, transforms, step: int, epoch: int) -> list[MetricRow]:
    """SAM-sharpness and the top Hessian eigenvalue on the first training batches (fixed order)."""
    cfg = spec.record.sharpness
    batches = []
    for i in range(min(cfg.batches, math.ceil(len(split) / spec.batch_size))):
        x, y = split.rows(slice(i * spec.batch_size, (i + 1) * spec.batch_size))
        for t in transforms:
            x, y = t(x, y, None)
        batches.append((x, y))
    rows = [(step, epoch, "train", "sam_sharpness", sam_sharpness(model, loss_fn, batches, cfg.rho))]
    if cfg.hessian_iters > 0:
        g = seeding.create_generator("sharpness", 0, split.x.device)
        top = hessian_top_eigenvalue(model, loss_fn, batches, iters=cfg.hessian_iters, generator=g)
        rows.append((step, epoch, "train", "hessian_top_eigenvalue", top))
    return rows


def train_step(
    model, optimizer, loss_fn, x, y, penalty=None, decouple=None, forward=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns the data loss (no penalty) and the output, on the device.

    With SAM (Foret et al. 2021, Alg. 1): the clean pass's gradient gives the ascent step, the
    gradient at the perturbed point gives the update; BatchNorm running statistics are updated by
    the clean pass only (momentum 0 on the second, not eval mode). The logged loss is the clean one.
    ``forward`` is the model as called (compiled and/or autocast; default: the model itself).
    """
    forward = forward or model
    out = forward(x)
    loss = loss_fn(out, y)
    total = loss + penalty() if penalty is not None else loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if isinstance(optimizer, SAM):
        optimizer.first_step()
        with bn_running_stats_frozen(model):
            perturbed = loss_fn(forward(x), y)
            (perturbed + penalty() if penalty is not None else perturbed).backward()
        optimizer.unperturb()
        optimizer = optimizer.base_optimizer
    if decouple is not None:
        decouple()
    optimizer.step()
    return loss, out.detach()
