"""Registered optimizers: factories ``(params, lr, ...) -> torch.optim.Optimizer``.

``weight_decay`` here is the optimizer's own decay (coupled into the gradient for SGD and Adam,
decoupled for AdamW); a run's ``weight_decay`` block is the explicit alternative (l2 or decoupled).
"""

from __future__ import annotations

from typing import Iterable

import torch
from pydantic import NonNegativeFloat, PositiveFloat

from ablab.registry import OPTIMIZERS


@OPTIMIZERS.register("sgd")
def sgd(
    params: Iterable,
    lr: PositiveFloat,
    momentum: NonNegativeFloat = 0.0,
    nesterov: bool = False,
    dampening: NonNegativeFloat = 0.0,
    weight_decay: NonNegativeFloat = 0.0,
) -> torch.optim.Optimizer:
    """Stochastic gradient descent, optionally with (Nesterov) momentum."""
    from ablab.errors import SpecError

    if nesterov and (momentum <= 0 or dampening != 0):
        raise SpecError("nesterov needs momentum > 0 and dampening 0", field="nesterov")
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, dampening=dampening,
        weight_decay=weight_decay,
    )


@OPTIMIZERS.register("adam")
def adam(
    params: Iterable,
    lr: PositiveFloat,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: PositiveFloat = 1e-8,
    weight_decay: NonNegativeFloat = 0.0,
) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015); weight_decay is added to the gradient (coupled)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(
    params: Iterable,
    lr: PositiveFloat,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: PositiveFloat = 1e-8,
    weight_decay: NonNegativeFloat = 0.01,
) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
