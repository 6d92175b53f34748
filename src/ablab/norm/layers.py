"""Registered norm layers: factories ``(num_features, dim) -> nn.Module`` for 1-d or 2-d input."""

from __future__ import annotations

from pydantic import PositiveFloat, confloat
from torch import nn

from ablab.registry import NORMS


@NORMS.register("none")
def no_norm(num_features: int, dim: int) -> nn.Module:
    """No normalization (the vanilla model)."""
    return nn.Identity()


@NORMS.register("batchnorm")
def batchnorm(num_features: int, dim: int, momentum: confloat(ge=0.0, le=1.0) = 0.1, eps: PositiveFloat = 1e-5) -> nn.Module:
    """BatchNorm (Ioffe & Szegedy 2015); momentum is the new batch's weight, PyTorch's convention."""
    cls = nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d
    return cls(num_features, eps=eps, momentum=momentum)
