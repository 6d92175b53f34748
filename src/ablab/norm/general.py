"""Batch-Group Norm and Batch Renorm: the norm layers of seed 002, ch. 4, with inference example weighing.

``BatchGroupNorm`` normalizes over groups of channels × groups of consecutive examples (seed 002,
§4.3.4): BatchNorm, ghost BatchNorm (Eq. 4.4), GroupNorm, LayerNorm and InstanceNorm are its
special cases. Every layer here keeps per-channel moving averages of the full batch, as PyTorch's
BatchNorm does (``running_mean``; ``running_var``, the EMA of the *unbiased* batch variance), so
that inference example weighing (Eq. 4.3, ``weighed_statistics``) applies to any of them.

Facts from the authors' code (github.com/ceciliaresearch/four_things_batch_norm, ``normalization.py``,
read for facts only): ``channel_groups`` counts groups; the moving averages are EMAs of E[x] and
E[x²] of the **full batch** (not of the ghost groups), decay 0.99; the training statistics of a
group are the pooled E[x] and E[x²] − E[x]²; at inference the per-channel moving averages are
averaged over each channel group before they are mixed with the example's own group statistics.
Ours differ where stated: the moving averages are PyTorch's (``momentum`` = 1 − decay, the unbiased
variance), so a trained layer's state dict has BatchNorm's buffers and α = 0 is BatchNorm's ``eval()``
exactly; the authors' code clips the example group to the batch, ours requires that it divides it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ablab.norm.batchnorm import AFFINE_MODES, Affine
from ablab.norm.weighing import weighed_statistics


def _expand(per_nc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """An (N, C) tensor shaped to broadcast against ``x`` (N, C, *spatial)."""
    return per_nc.reshape(*per_nc.shape, *([1] * (x.dim() - 2)))


class WeighableNorm(nn.Module):
    """Base: γ and β with seed 001's affine ablations, per-channel moving averages and an example weight α.

    ``example_weight`` (None: the layer's ordinary inference) is α of Eq. 4.3 at evaluation; the
    evaluator ``example_weighing`` sets it on every such layer for one pass. An ablated γ or β is a
    constant buffer of ones or zeros, as in ``AblatedBatchNorm``; trainable ones are ``weight`` and
    ``bias`` (the weight-decay rules and probes find them by those names).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: Affine = "gamma_beta"):
        super().__init__()
        if affine not in AFFINE_MODES:
            raise ValueError(f"affine must be one of {', '.join(AFFINE_MODES)}, got {affine!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] (the new batch's weight), got {momentum!r}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine_mode = affine
        self.learn_gamma = affine in ("gamma_beta", "gamma")
        self.learn_beta = affine in ("gamma_beta", "beta")
        self.weight = nn.Parameter(torch.ones(num_features)) if self.learn_gamma else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if self.learn_beta else None
        self.register_buffer("unit_gamma", None if self.learn_gamma else torch.ones(num_features), persistent=False)
        self.register_buffer("zero_beta", None if self.learn_beta else torch.zeros(num_features), persistent=False)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.example_weight: Optional[float] = None

    @property
    def gamma(self) -> torch.Tensor:
        """The effective scale γ (ones where ablated)."""
        return self.weight if self.weight is not None else self.unit_gamma

    @property
    def beta(self) -> torch.Tensor:
        """The effective shift β (zeros where ablated)."""
        return self.bias if self.bias is not None else self.zero_beta

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__} expects (N, {self.num_features}, ...) input, got {tuple(x.shape)}")

    @torch.no_grad()
    def _track(self, x: torch.Tensor) -> None:
        """Moving averages from the full batch, PyTorch's convention (the unbiased variance)."""
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x.float(), dim=dims, unbiased=False)
        self._track_stats(mean, var, x.numel() // self.num_features)

    @torch.no_grad()
    def _track_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """Moving averages from the full batch's per-channel mean and biased variance over ``count`` values each."""
        self.num_batches_tracked.add_(1)
        unbiased = var * (count / (count - 1)) if count > 1 else var
        self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)

    def _affine(self, x: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """γ(x − μ)/√(σ² + ε) + β with (N, C) statistics, as one multiply-add."""
        scale = self.gamma * torch.rsqrt(var + self.eps)
        shift = self.beta - mu * scale
        return x * _expand(scale, x) + _expand(shift, x)

    def _weighed(self, x: torch.Tensor, groups: int, alpha: float) -> torch.Tensor:
        """Inference with example weighing (Eq. 4.3) over ``groups`` channel groups."""
        mu, var = weighed_statistics(x, self.running_mean, self.running_var, groups, alpha)
        return self._affine(x, mu, var)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine_mode!r}"


class BatchGroupNorm(WeighableNorm):
    """Batch-Group Norm (seed 002, §4.3.4): statistics over ``groups`` channel groups × groups of ``examples`` examples.

    Training: the batch is cut into consecutive groups of ``examples`` examples (None: the whole
    batch; it must divide the batch) and the channels into ``groups`` groups (None: one per
    channel); each (example group, channel group) is normalized by its own mean and biased
    variance over its examples, channels and positions. Special cases: BatchNorm (None, None),
    ghost BatchNorm (None, B′) as in Eq. 4.4 read as consecutive groups, GroupNorm (G, 1),
    LayerNorm (1, 1), InstanceNorm (None, 1). The moving averages always come from the full batch.

    Inference: with ``example_weight`` α set, Eq. 4.3; otherwise layers whose example groups are
    single examples (GN, LN, IN) use the example's own statistics (α = 1, as ``nn.GroupNorm``) and
    the others the moving averages (α = 0, as BatchNorm's ``eval()``). The authors' code uses α = 0
    for every layer unless told otherwise.
    """

    def __init__(self, num_features: int, groups: Optional[int] = None, examples: Optional[int] = None,
                 eps: float = 1e-5, momentum: float = 0.1, affine: Affine = "gamma_beta"):
        super().__init__(num_features, eps, momentum, affine)
        groups = num_features if groups is None else groups
        if groups < 1 or num_features % groups:
            raise ValueError(f"the channel group count {groups} does not divide the {num_features} channels")
        if examples is not None and examples < 1:
            raise ValueError(f"examples per group must be positive, got {examples}")
        self.groups, self.examples = groups, examples

    @property
    def per_example(self) -> bool:
        """Whether each example is normalized alone in training (GN, LN, IN): then eval uses α = 1 by default."""
        return self.examples == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not self.training:
            alpha = self.example_weight if self.example_weight is not None else float(self.per_example)
            return self._weighed(x, self.groups, alpha)
        if self.groups == self.num_features and self.examples is None:  # BatchNorm: PyTorch's kernel (cuDNN)
            self.num_batches_tracked.add_(1)
            return F.batch_norm(x, self.running_mean, self.running_var, self.gamma, self.beta, True, self.momentum,
                                self.eps)
        if self.examples == 1:  # GroupNorm, LayerNorm, InstanceNorm: PyTorch's kernel
            self._track(x)
            return F.group_norm(x, self.groups, self.gamma, self.beta, self.eps)
        mean, var = self._group_statistics(x)
        return self._affine(x, mean, var)

    def check_batch(self, n: int, what: str = "") -> None:
        """ValueError unless the example groups divide a training batch of ``n`` (Eq. 4.4: B′ divides B)."""
        if self.examples is not None and n % self.examples:
            raise ValueError(f"{self.examples} examples per norm group (B′) do not divide "
                             f"{what or f'the training batch of {n}'} (seed 002, Eq. 4.4: B′ must divide the batch)")

    def _group_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example and channel (N, C) mean and biased variance of its (example group, channel group); also
        moves the averages (from the full batch: for ghost BN pooled from its equal-sized groups, exact)."""
        n, c = x.shape[:2]
        e = n if self.examples is None else self.examples
        self.check_batch(n)
        cg = c // self.groups
        wide = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics at least in float32
        var, mean = torch.var_mean(wide.reshape(n // e, e, self.groups, cg, -1), dim=(1, 3, 4), unbiased=False)
        if cg == 1:  # per channel: the full batch's mean and biased variance are the groups' pooled ones
            with torch.no_grad():
                full_mean = mean.mean(0)
                self._track_stats(full_mean, var.mean(0) + (mean - full_mean).square().mean(0), x.numel() // c)
        else:
            self._track(x)
        return (mean.repeat_interleave(e, 0).repeat_interleave(cg, 1),
                var.repeat_interleave(e, 0).repeat_interleave(cg, 1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}, examples={self.examples}"


class BatchRenorm(WeighableNorm):
    """Batch Renormalization (Ioffe 2017): BN corrected toward the moving averages by r and d, clipped.

    Training: x̂ = (x − μ_B)/σ_B · r + d with r = clip(σ_B/σ, 1/r_max, r_max) and
    d = clip((μ_B − μ)/σ, −d_max, d_max), no gradient through r and d; σ_B = √(var_B + ε),
    σ = √(running_var + ε), statistics at least in float32. The limits grow linearly from BatchNorm's 1 and 0,
    both from training step ``relax_start``, r_max until ``relax_end`` and d_max until
    ``d_relax_end`` (defaults: Ioffe's 5k, 40k and 25k steps, r_max 3, d_max 5); a step is a
    training forward pass (SAM's second pass restores the count). The moving averages are PyTorch's
    (the unbiased variance), not Ioffe's EMA of σ, so with r_max = 1, d_max = 0 the layer is BatchNorm
    exactly. Per channel.
    """

    def __init__(self, num_features: int, r_max: float = 3.0, d_max: float = 5.0, relax_start: int = 5000,
                 relax_end: int = 40000, d_relax_end: int = 25000, eps: float = 1e-5, momentum: float = 0.1,
                 affine: Affine = "gamma_beta"):
        super().__init__(num_features, eps, momentum, affine)
        if r_max < 1 or d_max < 0:
            raise ValueError(f"batch renorm needs r_max ≥ 1 and d_max ≥ 0, got {r_max}, {d_max}")
        if not 0 <= relax_start <= min(relax_end, d_relax_end):
            raise ValueError(f"batch renorm needs 0 ≤ relax_start ≤ relax_end and d_relax_end, got {relax_start}, "
                             f"{relax_end}, {d_relax_end}")
        self.r_max, self.d_max = r_max, d_max
        self.relax_start, self.relax_end, self.d_relax_end = relax_start, relax_end, d_relax_end

    def limits(self, step: int) -> tuple[float, float]:
        """(r_max, d_max) at this layer's training step ``step`` (0-based) of the linear relaxation."""
        def progress(end: int) -> float:
            span = end - self.relax_start
            return min(max((step - self.relax_start) / span, 0.0), 1.0) if span else float(step >= self.relax_start)

        return 1.0 + (self.r_max - 1.0) * progress(self.relax_end), self.d_max * progress(self.d_relax_end)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not self.training:
            return self._weighed(x, self.num_features, self.example_weight or 0.0)
        r_max, d_max = self.limits(int(self.num_batches_tracked))
        dims = [0, *range(2, x.dim())]
        var_b, mu_b = torch.var_mean(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=dims,
                                    unbiased=False)
        sigma_b = torch.sqrt(var_b + self.eps)
        with torch.no_grad():
            sigma = torch.sqrt(self.running_var + self.eps)
            r = (sigma_b / sigma).clamp(1.0 / r_max, r_max)
            d = ((mu_b - self.running_mean) / sigma).clamp(-d_max, d_max)
        self._track_stats(mu_b, var_b, x.numel() // self.num_features)
        # γ((x − μ_B)/σ_B·r + d) + β as one multiply-add per element: x·a + b with per-channel a and b
        scale = self.gamma * r / sigma_b
        shift = self.beta + self.gamma * d - mu_b * scale
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return x * scale.reshape(shape) + shift.reshape(shape)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, "
                f"relax=({self.relax_start}, {self.relax_end}, {self.d_relax_end})")
