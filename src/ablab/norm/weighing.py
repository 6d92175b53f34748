"""Inference example weighing (seed 002, Eq. 4.3): μ and σ² of the example's own statistics mixed with the moving ones.

At evaluation a norm layer normalizes example i with μ_i = α·E[x_i] + (1−α)·m_x and
σ_i² = α·E[x_i²] + (1−α)·m_{x²} − μ_i²; α = 0 is BatchNorm's ``eval()``, α = 1 the example's own
statistics (InstanceNorm for a per-channel layer, GroupNorm for a grouped one). It applies after
training to any layer with moving averages (``example_weight`` attribute): ``batchnorm`` and every
layer of ``ablab.norm.general``; ``example_weighing(model, α)`` sets it on all of them for one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import torch
from torch import nn


def check_alpha(alpha: Optional[float]) -> Optional[float]:
    """α of inference example weighing, None or in [0, 1] (ValueError otherwise)."""
    if alpha is not None and not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"the example weight α must be in [0, 1] (Eq. 4.3), got {alpha!r}")
    return None if alpha is None else float(alpha)


def weighed_statistics(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, groups: int,
                       alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example and channel μ and σ² of Eq. 4.3: the example's own statistics mixed with the moving ones by α.

    Own statistics: over the example's channel group and spatial positions (biased). Moving ones:
    per-channel ``running_mean`` m and ``running_var`` v averaged over the channel group as E[x] and
    E[x²] = v + m² (seed002.md §4.1, the PyTorch mapping). σ² = α·s + (1−α)·v + α(1−α)(e − m)² is
    α·E_own[x²] + (1−α)·E_mov[x²] − μ² rearranged, exact at α = 0 (eval BN) and α = 1 (the group's own).
    Returns two (N, C) tensors.
    """
    n, c = x.shape[:2]
    cg = c // groups
    wide = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics at least in float32
    var_own, mean_own = torch.var_mean(wide.reshape(n, groups, -1), dim=2, unbiased=False)  # (N, G)
    m = running_mean.reshape(groups, cg)
    mean_mov = m.mean(1)
    var_mov = running_var.reshape(groups, cg).mean(1) + (m - mean_mov[:, None]).square().mean(1)  # pooled
    mu = mean_mov + alpha * (mean_own - mean_mov)
    var = alpha * var_own + (1 - alpha) * var_mov + alpha * (1 - alpha) * (mean_own - mean_mov).square()
    return mu.repeat_interleave(cg, 1), var.repeat_interleave(cg, 1)


def weighable_layers(model: nn.Module) -> list[nn.Module]:
    """The model's norm layers that take an example weight (those with ``example_weight`` and moving averages)."""
    return [m for m in model.modules() if hasattr(m, "example_weight") and getattr(m, "running_mean", None) is not None]


@contextmanager
def example_weighing(model: nn.Module, alpha: float) -> Iterator[int]:
    """Inside, every weighable norm layer of ``model`` evaluates with example weight α; yields their count."""
    alpha = check_alpha(alpha)
    layers = weighable_layers(model)
    saved = [m.example_weight for m in layers]
    for m in layers:
        m.example_weight = alpha
    try:
        yield len(layers)
    finally:
        for m, value in zip(layers, saved):
            m.example_weight = value
