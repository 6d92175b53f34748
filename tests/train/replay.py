"""A run replayed by hand: the same initial weights and batches in plain PyTorch, every number direct.

``replay`` re-trains a RunSpec without ablab's loop, sampler, optimizer factory, loss registry,
evaluation or probes: ``torch.randperm`` on the run's ``shuffle`` stream, ``torch.optim.SGD``,
``F.cross_entropy`` / ``F.mse_loss``, full-split evaluation in one forward pass, ReLU outputs
read off an ``nn.Sequential`` layer by layer. It does not stop when the loss turns non-finite, so a
diverged run's replay holds what happened at every step. The model and data come from their
registries (what is under test is the recording, not the model zoo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ablab import seeding
from ablab.registry import DATASETS, MODELS
from ablab.spec import RunSpec


@dataclass
class Replay:
    """Per-step values of a replayed run; steps count completed optimizer steps (1 = the first)."""

    loss: dict[int, float] = field(default_factory=dict)  # data loss of step s's batch, before the update
    accuracy: dict[int, float] = field(default_factory=dict)  # accuracy on step s's batch, before the update
    lr: dict[int, float] = field(default_factory=dict)  # the lr step s used
    batch_size: dict[int, int] = field(default_factory=dict)
    sparsity: dict[int, np.ndarray] = field(default_factory=dict)  # zeroed fraction per ReLU on step s's batch
    relu_names: list[str] = field(default_factory=list)
    norms: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)  # after step s (0: init)
    evals: dict[int, dict[tuple[str, str], float]] = field(default_factory=dict)  # step -> (split, name) -> value
    eval_epoch: dict[int, int] = field(default_factory=dict)
    model: nn.Module | None = None
    data: object = None

    def mean_loss(self, first: int, last: int) -> float:
        """Mean data loss over steps first..last (float64)."""
        return float(np.mean([self.loss[s] for s in range(first, last + 1)], dtype=np.float64))


def _sequential_forward(model: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's output and each ReLU's output, computed layer by layer."""
    assert isinstance(model, nn.Sequential), "the replay reads ReLU outputs off an nn.Sequential"
    relu_out = {}
    for name, layer in model.named_children():
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            relu_out[name] = x
    return x, relu_out


def zeroed_fraction(h: torch.Tensor) -> float:
    """#{h = 0} / #h, NaN when h holds a NaN."""
    if torch.isnan(h).any():
        return math.nan
    return int((h == 0).sum()) / h.numel()


def _data_loss(out: torch.Tensor, y: torch.Tensor, classification: bool) -> torch.Tensor:
    if classification:
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y.reshape(out.shape))


@torch.no_grad()
def _evaluate(model: nn.Module, data, classification: bool, splits: list[str]) -> dict[tuple[str, str], float]:
    """Loss and accuracy (or MSE) over each whole split, one forward pass, eval mode."""
    model.eval()
    values = {}
    for name in splits:
        x, y = data.splits[name].x, data.splits[name].y
        out = model(x)
        values[(name, "loss")] = _data_loss(out, y, classification).item()
        if classification:
            values[(name, "accuracy")] = (out.argmax(dim=1) == y).double().mean().item()
        else:
            values[(name, "mse")] = ((out.double() - y.double().reshape(out.shape)) ** 2).mean().item()
    model.train()
    return values


def _norm_snapshot(model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """γ and β of every BatchNorm layer (1 and 0 where the parameter is absent)."""
    snap = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ones, zeros = np.ones(m.num_features, np.float32), np.zeros(m.num_features, np.float32)
            gamma = m.weight.detach().numpy().copy() if m.weight is not None else ones
            beta = m.bias.detach().numpy().copy() if m.bias is not None else zeros
            snap[name] = (gamma, beta)
    return snap


def _sam_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classification: bool, rho: float) -> None:
    """Replace the gradient by SAM's: ∇L at w + ρ g/‖g‖ (Foret et al. 2021 eq. 2), weights back to w."""
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    params = list(model.parameters())
    clean = [p.detach().clone() for p in params]
    norm = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in params]))
    with torch.no_grad():
        for p in params:
            p.add_(p.grad * (rho / (norm + 1e-12)))
    model.zero_grad()
    _data_loss(model(x), y, classification).backward()
    with torch.no_grad():
        for p, w in zip(params, clean):
            p.copy_(w)


def replay(spec: RunSpec, lr_factor: Callable[[int], float] = lambda s: 1.0) -> Replay:
    """Train ``spec`` by hand with plain SGD; ``lr_factor(s)`` is the schedule's factor at step s (1-based)."""
    opt = dict(spec.optimizer)
    assert opt.pop("name") == "sgd" and spec.weight_decay.value == 0 and not spec.augment
    data = DATASETS.create(spec.data)
    classification = data.task == "classification"
    with seeding.init_scope(spec.seeds.init):
        model = MODELS.create(spec.model, in_shape=tuple(data.in_shape), out_dim=data.out_dim)
    base_lr = opt.pop("lr") * spec.lr_scale
    sgd = torch.optim.SGD(model.parameters(), lr=base_lr, **opt)
    shuffle = seeding.create_generator("shuffle", spec.seeds.shuffle)
    train_x, train_y = data.splits["train"].x, data.splits["train"].y
    n, size = len(train_y), spec.batch_size
    per_epoch = n // size if spec.drop_last else math.ceil(n / size)
    total = spec.steps if spec.steps is not None else spec.epochs * per_epoch
    rec = spec.record
    r = Replay(model=model, data=data)
    r.norms[0] = _norm_snapshot(model)
    r.evals[0], r.eval_epoch[0] = _evaluate(model, data, classification, rec.eval_splits), 0
    model.train()
    step, epoch = 0, 0
    while step < total:
        epoch += 1
        order = torch.randperm(n, generator=shuffle)
        starts = range(0, per_epoch * size, size)
        for start in starts:
            idx = order[start : start + size]
            x, y = train_x[idx], train_y[idx]
            step += 1
            for group in sgd.param_groups:
                group["lr"] = base_lr * lr_factor(step)
            out, relu_out = _sequential_forward(model, x)
            loss = _data_loss(out, y, classification)
            sgd.zero_grad()
            loss.backward()
            if spec.objective["name"] == "sam":
                _sam_gradient(model, x, y, classification, spec.objective["rho"])
            sgd.step()
            r.loss[step], r.lr[step], r.batch_size[step] = loss.item(), base_lr * lr_factor(step), len(idx)
            if classification:
                r.accuracy[step] = (out.argmax(dim=1) == y).double().mean().item()
            r.relu_names = list(relu_out)
            r.sparsity[step] = np.array([zeroed_fraction(h) for h in relu_out.values()])
            r.norms[step] = _norm_snapshot(model)
            if step == total:
                break
        if epoch % rec.eval_every_epochs == 0 or step == total:
            r.evals[step], r.eval_epoch[step] = _evaluate(model, data, classification, rec.eval_splits), epoch
    return r
