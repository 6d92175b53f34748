"""Registered norm layers: factories ``(num_features, dim) -> nn.Module`` for 1-d or 2-d input."""

from __future__ import annotations

from pydantic import PositiveFloat, confloat
from torch import nn

from ablab.norm.batchnorm import Affine, AblatedBatchNorm1d, AblatedBatchNorm2d
from ablab.registry import NORMS


@NORMS.register("none")
def no_norm(num_features: int, dim: int) -> nn.Module:
    """No normalization (the vanilla model)."""
    return nn.Identity()


@NORMS.register("batchnorm")
def batchnorm(
    num_features: int,
    dim: int,
    affine: Affine = "gamma_beta",
    momentum: confloat(ge=0.0, le=1.0) = 0.1,
    eps: PositiveFloat = 1e-5,
) -> nn.Module:
    """BatchNorm (Ioffe & Szegedy 2015) with affine ablations: learn γ and β, only γ, only β, or neither.

    ``affine``: ``gamma_beta`` (the original), ``gamma`` (β fixed at 0), ``beta`` (γ fixed at 1),
    ``none`` (normalization only); a fixed parameter is no parameter (Dissecting BatchNorm §3.1.1).
    ``momentum`` is the new batch's weight in the running statistics, PyTorch's convention.
    """
    cls = AblatedBatchNorm1d if dim == 1 else AblatedBatchNorm2d
    return cls(num_features, eps=eps, momentum=momentum, affine=affine)
