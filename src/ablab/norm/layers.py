"""Registered norm layers: factories ``(num_features, dim) -> nn.Module`` for 1-d or 2-d input."""

from __future__ import annotations

from typing import Optional

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, confloat
from torch import nn

from ablab.norm.batchnorm import Affine, AblatedBatchNorm1d, AblatedBatchNorm2d
from ablab.norm.general import BatchGroupNorm, BatchRenorm
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


@NORMS.register("ghost_batchnorm")
def ghost_batchnorm(
    num_features: int,
    dim: int,
    ghost_size: PositiveInt,
    affine: Affine = "gamma_beta",
    momentum: confloat(ge=0.0, le=1.0) = 0.1,
    eps: PositiveFloat = 1e-5,
) -> nn.Module:
    """Ghost BatchNorm (seed 002, Eq. 4.4): each consecutive group of ghost_size (B′) examples normalized alone.

    B′ must divide the training batch (and a short last batch: use drop_last). The moving averages
    come from the full batch, as the authors' code does; evaluation ignores B′. B′ = batch is BatchNorm.
    """
    return BatchGroupNorm(num_features, groups=None, examples=ghost_size, eps=eps, momentum=momentum, affine=affine)


@NORMS.register("batch_group_norm")
def batch_group_norm(
    num_features: int,
    dim: int,
    groups: Optional[PositiveInt] = 32,
    examples: Optional[PositiveInt] = 2,
    affine: Affine = "gamma_beta",
    momentum: confloat(ge=0.0, le=1.0) = 0.1,
    eps: PositiveFloat = 1e-5,
) -> nn.Module:
    """Batch-Group Norm (seed 002, §4.3.4): statistics over channel groups × groups of consecutive examples.

    ``groups`` null: one group per channel; ``examples`` null: the whole batch. The defaults are the
    authors' (32 channel groups, 2 examples). Special cases: BN (null, null), ghost BN (null, B′),
    GroupNorm (G, 1), InstanceNorm (null, 1). Moving averages are kept for example weighing (Eq. 4.3).
    """
    return BatchGroupNorm(num_features, groups=groups, examples=examples, eps=eps, momentum=momentum, affine=affine)


@NORMS.register("group_norm")
def group_norm(
    num_features: int,
    dim: int,
    groups: PositiveInt = 32,
    affine: Affine = "gamma_beta",
    momentum: confloat(ge=0.0, le=1.0) = 0.1,
    eps: PositiveFloat = 1e-5,
) -> nn.Module:
    """GroupNorm (Wu & He 2018) that keeps moving averages, so example weighing applies (seed 002, Fig. 4.2).

    Trains and evaluates as ``nn.GroupNorm``; the moving averages let α < 1 mix in batch statistics
    after training (seed 002, Fig. 4.2).
    """
    return BatchGroupNorm(num_features, groups=groups, examples=1, eps=eps, momentum=momentum, affine=affine)


@NORMS.register("layer_norm")
def layer_norm(
    num_features: int,
    dim: int,
    affine: Affine = "gamma_beta",
    momentum: confloat(ge=0.0, le=1.0) = 0.1,
    eps: PositiveFloat = 1e-5,
) -> nn.Module:
    """LayerNorm (Ba et al. 2016) over all channels and positions of an example, with a per-channel γ and β.

    That is GroupNorm with one group (not ``nn.LayerNorm``'s per-element affine); moving averages kept.
    """
    return BatchGroupNorm(num_features, groups=1, examples=1, eps=eps, momentum=momentum, affine=affine)


@NORMS.register("instance_norm")
def instance_norm(
    num_features: int,
    dim: int,
    affine: Affine = "gamma_beta",
    momentum: confloat(ge=0.0, le=1.0) = 0.1,
    eps: PositiveFloat = 1e-5,
) -> nn.Module:
    """InstanceNorm (Ulyanov et al. 2016): each channel of each example over its positions; moving averages kept.

    After a linear layer (one value per channel) the output is β, as with ``nn.GroupNorm(C, C)``.
    """
    return BatchGroupNorm(num_features, groups=None, examples=1, eps=eps, momentum=momentum, affine=affine)


@NORMS.register("batch_renorm")
def batch_renorm(
    num_features: int,
    dim: int,
    r_max: confloat(ge=1.0) = 3.0,
    d_max: confloat(ge=0.0) = 5.0,
    relax_start: NonNegativeInt = 5000,
    relax_end: NonNegativeInt = 40000,
    d_relax_end: NonNegativeInt = 25000,
    affine: Affine = "gamma_beta",
    momentum: confloat(ge=0.0, le=1.0) = 0.1,
    eps: PositiveFloat = 1e-5,
) -> nn.Module:
    """Batch Renormalization (Ioffe 2017), the seed's baseline in Table 4.1 (its settings are not given).

    r and d are clipped to [1/r_max, r_max] and [−d_max, d_max]; the limits grow linearly from
    BatchNorm's (1, 0) from training step ``relax_start``, r_max until ``relax_end``, d_max until
    ``d_relax_end`` (Ioffe's 5k, 40k, 25k steps; the seed gives none of these settings).
    """
    return BatchRenorm(num_features, r_max=r_max, d_max=d_max, relax_start=relax_start, relax_end=relax_end,
                       d_relax_end=d_relax_end, eps=eps, momentum=momentum, affine=affine)
