"""BatchNorm whose learnable scale γ and shift β can each be ablated, i.e. fixed at 1 and 0.

The four variants of "Dissecting BatchNorm" (seed 001, §3.1.1): BN_γβ (``gamma_beta``, the
original), BN_γ (``gamma``: β ≡ 0), BN_β (``beta``: γ ≡ 1) and BN (``none``: the non-adaptive
normalization alone). An ablated parameter is not a parameter at all but a constant buffer of
ones or zeros (not in the state dict, never requiring a gradient), so it gets no gradient, no
optimizer state and no weight decay, and stays exactly 1 or 0 whatever the optimizer does; the
thesis' code instead overwrote trained values after every step, which lets momentum, Adam or
weight decay drift in the optimizer state.

Every variant passes a tensor for both γ and β to ``F.batch_norm``, so all four run the kernel
``nn.BatchNorm`` runs (cuDNN on a GPU) and differ only in what is learned. ``None`` for γ with a
learnable β is not an option: CUDA's backward then returns an empty gradient for β
("NativeBatchNormBackward0 returned an invalid gradient at index 2").
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ablab.norm.weighing import weighed_statistics

Affine = Literal["gamma_beta", "gamma", "beta", "none"]
AFFINE_MODES: tuple[str, ...] = get_args(Affine)


class AblatedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """y = γ·(x − μ_B)/√(σ²_B + ε) + β per channel, with γ ≡ 1 and/or β ≡ 0 where ablated.

    Ioffe & Szegedy (2015), Alg. 1 and 2: in training μ_B and the biased σ²_B are the batch's
    (over N and any spatial dims) and the running statistics move as
    ``running = (1 − momentum)·running + momentum·batch`` (PyTorch's convention; the running
    variance takes the unbiased batch variance); in eval the running statistics are used.
    Takes (N, C), (N, C, L) and (N, C, H, W) input. Trainable γ and β are ``weight`` and
    ``bias`` as in ``nn.BatchNorm*d``, so state dicts match; an ablated one is ``None`` and
    absent from the state dict. ``affine`` keeps PyTorch's meaning "has learnable affine
    parameters" (True unless ``affine_mode == 'none'``); ``gamma`` and ``beta`` are the
    effective values either way.
    """

    _input_dims: tuple[int, ...] = (2, 3, 4)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: Affine = "gamma_beta",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if affine not in AFFINE_MODES:
            raise ValueError(f"affine must be one of {', '.join(AFFINE_MODES)}, got {affine!r}")
        if momentum is None or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] (the new batch's weight), got {momentum!r}")
        # affine=False: the base class registers weight = bias = None; the learnable ones follow
        super().__init__(num_features, eps, momentum, affine=False, track_running_stats=True,
                         device=device, dtype=dtype)
        self.affine_mode: str = affine
        self.learn_gamma: bool = affine in ("gamma_beta", "gamma")
        self.learn_beta: bool = affine in ("gamma_beta", "beta")
        self.affine = self.learn_gamma or self.learn_beta
        factory = {"device": device, "dtype": dtype}
        if self.learn_gamma:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
        if self.learn_beta:
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        # the ablated values as constants: they follow .to(device/dtype) but are not saved
        self.register_buffer("unit_gamma", None if self.learn_gamma else torch.ones(num_features, **factory),
                             persistent=False)
        self.register_buffer("zero_beta", None if self.learn_beta else torch.zeros(num_features, **factory),
                             persistent=False)
        # α of inference example weighing (seed 002, Eq. 4.3); None or 0: the running statistics alone
        self.example_weight: float | None = None

    def reset_parameters(self) -> None:
        """Running mean 0, running variance 1, γ = 1, β = 0 (the learnable ones)."""
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def gamma(self) -> torch.Tensor:
        """The effective scale γ: the trained ``weight``, or the constant ones where γ is ablated."""
        return self.weight if self.weight is not None else self.unit_gamma

    @property
    def beta(self) -> torch.Tensor:
        """The effective shift β: the trained ``bias``, or the constant zeros where β is ablated."""
        return self.bias if self.bias is not None else self.zero_beta

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in self._input_dims:
            raise ValueError(f"expected {' or '.join(map(str, self._input_dims))}-d input, got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if self.training:
            self.num_batches_tracked.add_(1)
        elif self.example_weight:
            mu, var = weighed_statistics(x, self.running_mean, self.running_var, self.num_features, self.example_weight)
            scale = self.gamma * torch.rsqrt(var + self.eps)
            shape = (*scale.shape, *([1] * (x.dim() - 2)))
            return x * scale.reshape(shape) + (self.beta - mu * scale).reshape(shape)
        return F.batch_norm(x, self.running_mean, self.running_var, self.gamma, self.beta,
                            self.training, self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine_mode!r}"


# Subclasses of PyTorch's own classes too, so isinstance checks written for nn.BatchNorm1d/2d
# (weight-decay rules, fusion, SyncBatchNorm conversion) treat them as the BatchNorm they are.
class AblatedBatchNorm1d(AblatedBatchNorm, nn.BatchNorm1d):
    """``AblatedBatchNorm`` for (N, C) or (N, C, L) input; an ``nn.BatchNorm1d``."""

    _input_dims = (2, 3)


class AblatedBatchNorm2d(AblatedBatchNorm, nn.BatchNorm2d):
    """``AblatedBatchNorm`` for (N, C, H, W) input; an ``nn.BatchNorm2d``."""

    _input_dims = (4,)
