"""Parameter groups and weight-decay rules: which parameters decay, toward what, and where.

A rule says *which* parameters decay and toward which centre c (0, or 1 for norm scales γ
under ``gamma_to_one``); a mode says *where* the decay λ acts. Slide 003 "Weight Decay vs L²":
θ ← θ − η ∂L/∂θ − ηλθ is weight decay; L + ½λ‖θ‖² is L² regularisation; they coincide for
plain SGD only.

======================  ==========================  ===================  =====================
mode                    SGD (no momentum)           SGD + momentum       Adam / AdamW
======================  ==========================  ===================  =====================
``"optimizer"``         group ``weight_decay``:     λw enters the        Adam: λw added to g,
(λ in the group's       g + λw, ≡ l2                momentum, ≡ l2       ≡ l2 (scaled by
``weight_decay``)                                                        1/√v̂); AdamW: w −= lr·λ·w
``"l2"`` (loss +        w −= lr·(g + λ(w − c))      λ(w − c) enters the  λ(w − c) is rescaled
½λ‖w − c‖²,             ≡ decoupled                 momentum buffer      by 1/√v̂: not decay
``group_l2_penalty``)
``"decoupled"``         w −= lr·λ·(w − c) before    decay outside the    AdamW-style decay
(outside the optimizer, the step, ≡ l2             momentum (SGDW)      (for Adam, = AdamW)
``decoupled_decay_``)
======================  ==========================  ===================  =====================

In ``"l2"`` and ``"decoupled"`` modes every group's ``weight_decay`` is 0, so the optimizer
(AdamW included) never decays a second time. A centre c ≠ 0 cannot be expressed by an
optimizer's ``weight_decay``: in ``"optimizer"`` mode such groups decay by ``decoupled_decay_``
(for plain SGD that equals the coupled form). With SAM the ascent direction contains the decay
only in ``"l2"`` mode (it is part of the loss).

Call the decoupled helpers after backward and *before* the optimizer step: they decay θ_{t−1}
as in SGDW/AdamW (Loshchilov & Hutter 2019, Alg. 1 and 2); after the step they would decay the
updated weights, which differs by O(lr²λ). With SAM: ``sam.unperturb()``, decay,
``sam.base_optimizer.step()`` (that is ``second_step`` with the decay in between).
Parameters without a gradient (frozen, unused) are not decayed, as in ``torch.optim.AdamW``.
"""

from __future__ import annotations

from typing import Iterable, Literal, Optional

import torch
from torch import nn

# the one declaration of the weight-decay rules and modes (the spec's ``weight_decay`` block uses them)
RULES: tuple[str, ...] = ("all", "exclude_bias_norm", "gamma_to_one")
MODES: tuple[str, ...] = ("optimizer", "decoupled", "l2")
Rule = Literal[RULES]
Mode = Literal[MODES]
RunMode = Literal["l2", "decoupled"]  # the run's own decay; "optimizer" is the optimizer's ``weight_decay``

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def is_norm_module(module: nn.Module) -> bool:
    """A normalization layer: a torch norm type, a module with ``running_mean``, or a *Norm* class."""
    return (
        isinstance(module, _NORM_TYPES)
        or getattr(module, "running_mean", None) is not None
        or "Norm" in type(module).__name__
    )


def _classify(model: nn.Module) -> dict[int, str]:
    """id(param) → 'scale' (norm γ), 'shift' (norm β and other norm params) for norm modules."""
    kinds: dict[int, str] = {}
    for module in model.modules():
        if not is_norm_module(module):
            continue
        for name, p in module.named_parameters(recurse=False):
            kinds.setdefault(id(p), "scale" if name == "weight" else "shift")
    return kinds


def create_param_groups(
    model: nn.Module,
    weight_decay: float,
    rule: Rule = "all",
    mode: Mode = "optimizer",
) -> list[dict]:
    """Optimizer groups for a weight-decay rule; each group names its rate and centre.

    ``all``: every parameter decays toward 0. ``exclude_bias_norm``: biases, normalization
    parameters (γ, β) and every other ≤1-d parameter get λ = 0. ``gamma_to_one``: as ``all``,
    but norm scales γ decay toward 1 — seed 002 §4.3.3 compares WD on γ, β toward 0 with γ toward
    1 ("it did not matter whether γ was regularized to 0 or 1; what was important was whether it
    had weight decay applied at all"), so only γ's centre differs from ``all``.

    Keys: ``params``, ``name`` (decay | no_decay | norm_scale), ``decay_rate`` (λ),
    ``decay_to`` (c), ``decay_mode`` and ``weight_decay`` (λ for the optimizer, 0 unless
    mode is ``optimizer`` and c = 0).
    """
    if rule not in RULES:
        raise ValueError(f"unknown weight-decay rule '{rule}'; known: {', '.join(RULES)}")
    if mode not in MODES:
        raise ValueError(f"unknown weight-decay mode '{mode}'; known: {', '.join(MODES)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    kinds = _classify(model)
    buckets: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "norm_scale": []}
    for name, p in model.named_parameters():
        kind = kinds.get(id(p))
        if rule == "all":
            buckets["decay"].append(p)
        elif rule == "exclude_bias_norm":
            no_decay = kind is not None or p.ndim <= 1 or name.rsplit(".", 1)[-1] == "bias"
            buckets["no_decay" if no_decay else "decay"].append(p)
        else:
            buckets["norm_scale" if kind == "scale" else "decay"].append(p)
    settings = {"decay": (weight_decay, 0.0), "no_decay": (0.0, 0.0), "norm_scale": (weight_decay, 1.0)}
    groups = []
    for name, params in buckets.items():
        if not params:
            continue
        rate, centre = settings[name]
        in_optimizer = mode == "optimizer" and centre == 0.0
        groups.append({
            "params": params, "name": name, "decay_rate": rate, "decay_to": centre,
            "decay_mode": mode, "weight_decay": rate if in_optimizer else 0.0,
        })
    return groups


def _decay_(groups: Iterable[dict], lr: Optional[float], select) -> None:
    with torch.no_grad():
        for group in groups:
            rate, centre = group.get("decay_rate", 0.0), group.get("decay_to", 0.0)
            if rate == 0 or not select(group):
                continue
            step = (group["lr"] if lr is None else lr) * rate
            for p in group["params"]:
                if p.grad is None:
                    continue
                if centre == 0.0:
                    p.mul_(1.0 - step)
                else:
                    p.sub_(p - centre, alpha=step)


def decoupled_weight_decay_(param_groups: Iterable[dict], lr: Optional[float] = None) -> None:
    """w ← w − lr·λ·w for groups with centre 0 in ``decoupled`` mode (SGDW, Loshchilov & Hutter 2019).

    ``lr`` defaults to each group's current ``lr`` (the schedule's value). Call before the step.
    """
    _decay_(param_groups, lr, lambda g: g.get("decay_mode") == "decoupled" and g.get("decay_to", 0.0) == 0.0)


def apply_decay_toward(param_groups: Iterable[dict], lr: Optional[float] = None) -> None:
    """w ← w − lr·λ·(w − c) for groups with a centre c ≠ 0 (γ → 1), unless in ``l2`` mode.

    ``lr`` defaults to each group's current ``lr``. Call before the step.
    """
    _decay_(param_groups, lr, lambda g: g.get("decay_mode") != "l2" and g.get("decay_to", 0.0) != 0.0)


def decoupled_decay_(param_groups: Iterable[dict], lr: Optional[float] = None) -> None:
    """Every decay that acts outside the optimizer and the loss: both helpers above."""
    decoupled_weight_decay_(param_groups, lr)
    apply_decay_toward(param_groups, lr)


def l2_penalty(params: Iterable[torch.Tensor], coefficient: float, center: float = 0.0) -> torch.Tensor:
    """½·λ·Σ‖w − c‖² (coupled L2, added to the loss; its gradient is λ(w − c))."""
    params = list(params)
    if not params or coefficient == 0:
        device = params[0].device if params else None
        return torch.zeros((), device=device)
    total = sum((p - center).pow(2).sum() if center else p.pow(2).sum() for p in params)
    return 0.5 * coefficient * total


def group_l2_penalty(param_groups: Iterable[dict]) -> torch.Tensor:
    """Σ over ``l2``-mode groups of ½·λ_g·Σ‖w − c_g‖²."""
    terms = [
        l2_penalty(g["params"], g["decay_rate"], g.get("decay_to", 0.0))
        for g in param_groups
        if g.get("decay_mode") == "l2" and g.get("decay_rate", 0.0) > 0
    ]
    return sum(terms[1:], terms[0]) if terms else torch.zeros(())
