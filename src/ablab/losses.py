"""Registered losses: factories returning ``loss(output, target) -> scalar mean``.

Targets are class indices (N,) or soft labels (N, C) for classification, (N, D) for regression.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import confloat

from ablab.errors import SpecError
from ablab.registry import LOSSES, quiet_default

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@LOSSES.register("cross_entropy")
@quiet_default("smoothing")  # added with seed 002 ch. 3: runs stored before keep their ids
def cross_entropy(label_smoothing: confloat(ge=0.0, lt=1.0) = 0.0, smoothing: confloat(ge=0.0, lt=1.0) = 0.0) -> Loss:
    """Softmax cross-entropy on hard labels or soft label distributions, with either smoothing convention.

    ``label_smoothing`` is PyTorch's: the target is (1 − s)·y + s/C (s/C on every class). ``smoothing`` is
    seed 002's (ch. 3, Eq. 3.8): 1 − s on the true class and s/(C − 1) on each other one, s ≤ 1 − 1/C (at
    s = 1 − 1/C the target is uniform); on soft labels y (mixed examples) it is the same affine map,
    (1 − s − s/(C − 1))·y + s/(C − 1), so mixing and smoothing commute. Give at most one of the two.
    """
    if label_smoothing > 0 and smoothing > 0:
        raise SpecError("give one of 'label_smoothing' (PyTorch's: s/C on every class) and 'smoothing' "
                        "(seed 002 Eq. 3.8: 1 − s on the true class, s/(C − 1) elsewhere), not both",
                        field="smoothing")

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            target = target.to(output.dtype)
        if smoothing > 0:
            return smoothed_cross_entropy(output, target, smoothing)
        return F.cross_entropy(output, target, label_smoothing=label_smoothing)

    def check_classes(num_classes: int) -> None:
        """Eq. 3.8's range of s for ``num_classes`` classes: a ``SpecError`` outside it."""
        problem = smoothing_problem(smoothing, num_classes)
        if problem:
            raise SpecError(problem, field="smoothing")

    loss.needs_classes = True  # type: ignore[attr-defined]
    loss.check_classes = check_classes  # type: ignore[attr-defined]
    return loss


def smoothing_problem(s: float, num_classes: int) -> str:
    """Why ``s`` is outside Eq. 3.8's range [0, 1 − 1/C] for C = ``num_classes`` ('' when it is inside)."""
    if num_classes < 2:
        return f"smoothing needs at least 2 classes, the data have {num_classes}"
    top = 1.0 - 1.0 / num_classes
    if not 0.0 <= s <= top + 1e-12:
        return (f"smoothing {s} is outside [0, 1 − 1/C] = [0, {top:.4g}] for C = {num_classes} classes "
                "(seed 002 Eq. 3.8; above it the true class gets less than the others)")
    return ""


def smoothed_targets(target: torch.Tensor, num_classes: int, s: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Eq. 3.8's targets (N, C): class indices or soft labels y mapped to (1 − s − s/(C − 1))·y + s/(C − 1)."""
    problem = smoothing_problem(s, num_classes)
    if problem:
        raise ValueError(problem)
    y = target.to(dtype) if target.is_floating_point() else F.one_hot(target, num_classes).to(dtype)
    off = s / (num_classes - 1)
    return y * (1.0 - s - off) + off


def smoothed_cross_entropy(output: torch.Tensor, target: torch.Tensor, s: float) -> torch.Tensor:
    """Mean cross-entropy of ``output`` against Eq. 3.8's smoothed targets."""
    t = smoothed_targets(target, output.shape[-1], s, output.dtype)
    return -(t * F.log_softmax(output, dim=-1)).sum(-1).mean()


@LOSSES.register("mse")
def mse() -> Loss:
    """Mean squared error; class labels become one-hot targets."""

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not target.is_floating_point():
            target = F.one_hot(target, output.shape[-1]).to(output.dtype)
        return F.mse_loss(output, target.reshape(output.shape).to(output.dtype))

    return loss
