"""Registered losses: factories returning ``loss(output, target) -> scalar mean``.

Targets are class indices (N,) or soft labels (N, C) for classification, (N, D) for regression.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import confloat

from ablab.registry import LOSSES

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@LOSSES.register("cross_entropy")
def cross_entropy(label_smoothing: confloat(ge=0.0, lt=1.0) = 0.0) -> Loss:
    """Softmax cross-entropy on hard labels or soft label distributions."""

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            target = target.to(output.dtype)
        return F.cross_entropy(output, target, label_smoothing=label_smoothing)

    loss.needs_classes = True  # type: ignore[attr-defined]
    return loss


@LOSSES.register("mse")
def mse() -> Loss:
    """Mean squared error; class labels become one-hot targets."""

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not target.is_floating_point():
            target = F.one_hot(target, output.shape[-1]).to(output.dtype)
        return F.mse_loss(output, target.reshape(output.shape).to(output.dtype))

    return loss
