"""Parameter groups and weight-decay rules: which parameters decay, toward what, and where.

Every trainable parameter falls in one class (``CLASSES``: ``weight``, ``bias``, ``norm_scale`` γ,
``norm_shift`` β); a frozen parameter, or an ablated γ/β (a buffer), is in no class and no group.
A rule says *which* classes decay and toward which centre c (0, or 1 for norm scales γ under
``gamma_to_one``); a mode says *where* the decay λ acts. Learning-rate multipliers are declared by
the same classes (``MULTIPLIER_RULES``, beside ``RULES``): ``{bias_norm: 0.1}`` is 0.1× lr on
biases and norm γ/β. Slide 003 "Weight Decay vs L²":
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

# the one declaration of the parameter classes, and of the weight-decay and lr-multiplier rules over them
# (the spec's ``weight_decay`` block and its ``lr_multipliers`` use them)
CLASSES: tuple[str, ...] = ("weight", "bias", "norm_scale", "norm_shift")
RULES: tuple[str, ...] = ("all", "exclude_bias_norm", "gamma_to_one", "exclude_norm")
DECAYED: dict[str, frozenset[str]] = {  # rule -> the classes it decays (the others get λ = 0)
    "all": frozenset(CLASSES),
    "exclude_bias_norm": frozenset({"weight"}),
    "gamma_to_one": frozenset(CLASSES),
    "exclude_norm": frozenset({"weight", "bias"}),
}
TOWARD_ONE: dict[str, frozenset[str]] = {"gamma_to_one": frozenset({"norm_scale"})}  # rule -> classes with c = 1
MULTIPLIER_RULES: dict[str, frozenset[str]] = {  # a key of ``lr_multipliers`` -> the classes it selects
    "weight": frozenset({"weight"}),
    "bias": frozenset({"bias"}),
    "norm_scale": frozenset({"norm_scale"}),
    "norm_shift": frozenset({"norm_shift"}),
    "norm": frozenset({"norm_scale", "norm_shift"}),
    "bias_norm": frozenset({"bias", "norm_scale", "norm_shift"}),
}
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


def param_class(name: str, p: nn.Parameter, kinds: dict[int, str]) -> str:
    """The class of a parameter: norm γ/β by its module, else ``bias`` (≤1-d or named bias) or ``weight``."""
    kind = kinds.get(id(p))
    if kind is not None:
        return "norm_scale" if kind == "scale" else "norm_shift"
    return "bias" if p.ndim <= 1 or name.rsplit(".", 1)[-1] == "bias" else "weight"


def check_multipliers(multipliers: dict[str, float]) -> None:
    """Known rule names, positive finite factors, no class selected twice (ValueError otherwise)."""
    seen: dict[str, str] = {}
    for rule, factor in multipliers.items():
        if rule not in MULTIPLIER_RULES:
            raise ValueError(f"unknown lr-multiplier rule '{rule}'; known: {', '.join(MULTIPLIER_RULES)}")
        if not (isinstance(factor, (int, float)) and 0 < factor < float("inf")):
            raise ValueError(f"lr multiplier of '{rule}' must be a positive number, got {factor!r}")
        for cls in sorted(MULTIPLIER_RULES[rule]):
            if cls in seen:
                raise ValueError(f"lr-multiplier rules '{seen[cls]}' and '{rule}' both select {cls}; give each class once")
            seen[cls] = rule


def _check_matches(multipliers: dict[str, float], present: set[str]) -> None:
    """Every multiplier rule selects a class the model has (ValueError otherwise)."""
    for rule_name in multipliers:
        if not MULTIPLIER_RULES[rule_name] & present:
            raise ValueError(f"lr-multiplier rule '{rule_name}' matches no trainable parameter of the model "
                             f"(it selects {', '.join(sorted(MULTIPLIER_RULES[rule_name]))}; "
                             f"the model has {', '.join(c for c in CLASSES if c in present) or 'none'})")


def check_multipliers_match(model: nn.Module, multipliers: dict[str, float]) -> None:
    """Every lr-multiplier rule selects at least one trainable parameter of ``model`` (ValueError otherwise)."""
    kinds = _classify(model)
    _check_matches(multipliers, {param_class(n, p, kinds) for n, p in model.named_parameters() if p.requires_grad})


def _multiplier_of(multipliers: dict[str, float]) -> dict[str, float]:
    """class -> lr multiplier (1.0 where no rule names it)."""
    out = dict.fromkeys(CLASSES, 1.0)
    for rule, factor in multipliers.items():
        for cls in MULTIPLIER_RULES[rule]:
            out[cls] = float(factor)
    return out


def create_param_groups(
    model: nn.Module,
    weight_decay: float,
    rule: Rule = "all",
    mode: Mode = "optimizer",
    lr_multipliers: Optional[dict[str, float]] = None,
) -> list[dict]:
    """Optimizer groups for a weight-decay rule and lr multipliers; each group names its rate, centre, factor.

    ``all``: every parameter decays toward 0. ``exclude_bias_norm``: biases, normalization
    parameters (γ, β) and every other ≤1-d parameter get λ = 0. ``exclude_norm``: only γ and β get
    λ = 0. ``gamma_to_one``: as ``all``, but norm scales γ decay toward 1 — seed 002 §4.3.3 compares
    WD on γ, β toward 0 with γ toward 1 ("it did not matter whether γ was regularized to 0 or 1;
    what was important was whether it had weight decay applied at all"), so only γ's centre differs
    from ``all``, and ``exclude_norm`` is the same global decay without it. Frozen parameters
    (``requires_grad`` false) are in no group.

    Keys: ``params``, ``name`` (decay | no_decay | norm_scale, with ``×f`` for a multiplier f ≠ 1),
    ``decay_rate`` (λ), ``decay_to`` (c), ``decay_mode``, ``weight_decay`` (λ for the optimizer, 0
    unless mode is ``optimizer`` and c = 0) and, with ``lr_multipliers``, ``lr_multiplier``
    (``apply_lr_multipliers`` scales each group's lr by it once the optimizer is built).
    A multiplier rule that selects no parameter of the model is an error.
    """
    if rule not in RULES:
        raise ValueError(f"unknown weight-decay rule '{rule}'; known: {', '.join(RULES)}")
    if mode not in MODES:
        raise ValueError(f"unknown weight-decay mode '{mode}'; known: {', '.join(MODES)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    multipliers = dict(lr_multipliers or {})
    check_multipliers(multipliers)
    factor_of = _multiplier_of(multipliers)
    kinds = _classify(model)
    buckets: dict[tuple[str, float], list[nn.Parameter]] = {}
    present: set[str] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        cls = param_class(name, p, kinds)
        present.add(cls)
        bucket = ("no_decay" if cls not in DECAYED[rule] else
                  "norm_scale" if cls in TOWARD_ONE.get(rule, ()) else "decay")
        buckets.setdefault((bucket, factor_of[cls]), []).append(p)
    _check_matches(multipliers, present)
    settings = {"decay": (weight_decay, 0.0), "no_decay": (0.0, 0.0), "norm_scale": (weight_decay, 1.0)}
    order = {"decay": 0, "no_decay": 1, "norm_scale": 2}
    groups = []
    for (bucket, factor), params in sorted(buckets.items(), key=lambda kv: (kv[0][1] != 1.0, order[kv[0][0]])):
        rate, centre = settings[bucket]
        in_optimizer = mode == "optimizer" and centre == 0.0
        group = {
            "params": params, "name": bucket if factor == 1.0 else f"{bucket}×{factor:g}", "decay_rate": rate,
            "decay_to": centre, "decay_mode": mode, "weight_decay": rate if in_optimizer else 0.0,
        }
        if multipliers:
            group["lr_multiplier"] = factor
        groups.append(group)
    return groups


def class_settings(weight_decay: float, rule: str, multipliers: dict[str, float]) -> list[tuple[str, float, float, float]]:
    """Per parameter class: (class, λ, centre c, lr multiplier), as ``create_param_groups`` assigns them."""
    factor_of = _multiplier_of(multipliers)
    return [(cls, weight_decay if cls in DECAYED[rule] else 0.0, 1.0 if cls in TOWARD_ONE.get(rule, ()) else 0.0,
             factor_of[cls]) for cls in CLASSES]


def apply_lr_multipliers(optimizer: torch.optim.Optimizer) -> None:
    """Each group's lr times its ``lr_multiplier`` (once, right after the optimizer is built)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_multiplier", 1.0)


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
