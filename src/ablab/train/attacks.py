"""Adversarial attacks (seed 002 ch. 3): FGSM, PGD and SPSA as plain functions on any ``nn.Module``.

The call (what an evaluator or a training objective calls on one batch)::

    x_adv = attack(model, x, y, transforms=(), forward=None, loss_fn=None, generator=None)

``attack`` is built by ``ATTACKS.create({"name": "pgd", "eps": 0.03, ...})`` (or call ``fgsm``/``pgd``/
``spsa`` directly with the same keywords). ``x`` are **pixels in ``bounds``** (``[0, 1]``), *before* the
pipeline's deterministic preprocessing; ``transforms`` are that preprocessing (the ``normalize``
augmentation: the evaluation context's ``transforms``), applied to every candidate image inside
the attack, so the model sees ``forward(normalize(x_adv))``. ε and the step are therefore in pixel
units of the [0, 1] image, as in the seed (ε = .03, step .0078 on CIFAR; 12/255 and 3/255 on SVHN),
whatever the normalization; ``x_adv`` stays in ``bounds`` and within ε of ``x``. ``y``: class
indices, or soft label rows (mixed or smoothed labels; the attack's cross-entropy takes either).
``forward`` (default ``model``) is how the module is called (a packed model's view, say);
``loss_fn`` (default the plain softmax cross-entropy, the seed's J) is what FGSM/PGD ascend;
``generator`` the random stream of PGD's start and SPSA's directions: ``attack_generator(seed,
device)``, the named ``attack`` stream of ``ablab.seeding``, so a robust accuracy is bitwise
reproducible on the CPU. The module's parameters' ``.grad`` are never touched (the gradient is
taken with respect to the input only), and the module leaves in the mode it came in.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

from ablab import seeding
from ablab.optim.sam import bn_running_stats_frozen
from ablab.registry import ATTACKS

Forward = Callable[[Tensor], Tensor]
Norm = Literal["linf", "l2"]
LabelSource = Literal["true", "predicted"]
Mode = Literal["eval", "train"]
ATTACK_STREAM = "attack"  # the named seed stream attacks draw from (random start, SPSA directions)


def attack_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The attacks' own random stream for ``seed`` on ``device`` (independent of a run's other streams)."""
    return seeding.create_generator(ATTACK_STREAM, seed, device)


def check_bounds(x: Tensor, bounds: tuple[float, float]) -> None:
    """ValueError if a pixel of ``x`` lies outside ``bounds``: ε would not be in pixel units."""
    lo, hi = bounds
    if x.numel() and (float(x.min()) < lo or float(x.max()) > hi):
        raise ValueError(f"the attack expects pixels in [{lo}, {hi}] before normalization; the batch spans "
                         f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (attack before `normalize`, or set bounds)")


def _check(eps: float, step: float, steps: int, bounds: tuple[float, float]) -> None:
    """ValueError for a negative ε, step or step count, or empty bounds."""
    if eps < 0 or step < 0 or steps < 0:
        raise ValueError(f"an attack needs eps ≥ 0, step ≥ 0 and steps ≥ 0 (got eps={eps}, step={step}, steps={steps})")
    if not bounds[0] < bounds[1]:
        raise ValueError(f"bounds must be (low, high) with low < high, got {tuple(bounds)}")


def preprocessed(forward: Forward, transforms: tuple, y: Tensor) -> Forward:
    """``forward`` after the deterministic preprocessing: pixels → ``normalize`` (…) → model."""

    def call(x: Tensor) -> Tensor:
        for transform in transforms:
            x, _ = transform(x, y, None)
        return forward(x)

    return call


@contextlib.contextmanager
def attack_mode(model: nn.Module, mode: Mode) -> Iterator[None]:
    """The module's mode while attacking: ``eval``; or ``train`` (batch statistics, running ones untouched)."""
    was_training = model.training
    model.train(mode == "train")
    try:
        if mode == "train":
            with bn_running_stats_frozen(model):
                yield
        else:
            yield
    finally:
        model.train(was_training)


def _targets(call: Forward, x: Tensor, y: Tensor, labels: LabelSource) -> Tensor:
    """What the attack moves away from: the true labels, or the model's predicted classes on ``x``."""
    if labels == "true":
        return y
    with torch.no_grad():
        return call(x).argmax(dim=-1)


def _cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """The seed's J: softmax cross-entropy, mean over the batch (hard or soft targets)."""
    return F.cross_entropy(output, target.to(output.dtype) if target.is_floating_point() else target)


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: Norm, bounds: tuple[float, float]) -> Tensor:
    """``x_adv`` moved into the ε-ball around ``x`` (L∞: a clamp; L2: a radial shrink), then into ``bounds``."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        delta = delta * torch.where(size > eps, eps / size.clamp_min(1e-12), torch.ones_like(size))
    return (x + delta).clamp(*bounds)


def _ascent(grad: Tensor, norm: Norm) -> Tensor:
    """The steepest-ascent direction of unit size: sign(∇) for L∞, ∇ / ‖∇‖₂ per example for L2."""
    if norm == "linf":
        return grad.sign()
    size = grad.flatten(1).norm(dim=1).view(-1, *[1] * (grad.dim() - 1))
    return grad / size.clamp_min(1e-12)


def _random_start(x: Tensor, eps: float, norm: Norm, generator: Optional[torch.Generator]) -> Tensor:
    """A uniform draw in the L∞ box (or the L2 ball's cube, projected later) of radius ε around ``x``."""
    if generator is None:
        raise ValueError("a random start needs a generator: attack_generator(seed, device)")
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + (2 * u - 1) * eps


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float = 0.03, step: float = 0.0078, steps: int = 10, *,
        random_start: bool = True, norm: Norm = "linf", labels: LabelSource = "true", mode: Mode = "eval",
        bounds: tuple[float, float] = (0.0, 1.0), transforms: tuple = (), forward: Optional[Forward] = None,
        loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
        generator: Optional[torch.Generator] = None) -> Tensor:
    """Projected gradient ascent on the loss (Madry et al.; seed 002 ch. 3): ``steps`` steps of size ``step``.

    Each step: x ← Π_{ε-ball ∩ bounds}(x + step · sign(∇ₓJ)) (L∞; L2: the normalized gradient). A random
    start draws δ₀ ~ U(−ε, ε) first (projected). 0 steps returns ``x`` itself (after the random start, if any).
    """
    _check(eps, step, steps, bounds)
    check_bounds(x, bounds)
    call = preprocessed(forward or model, transforms, y)
    loss_fn = loss_fn or _cross_entropy
    x = x.detach()
    with attack_mode(model, mode), torch.enable_grad():
        target = _targets(call, x, y, labels)
        x_adv = _project(_random_start(x, eps, norm, generator), x, eps, norm, bounds) if random_start else x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(loss_fn(call(x_adv), target), x_adv)
            x_adv = _project(x_adv.detach() + step * _ascent(grad, norm), x, eps, norm, bounds)
    return x_adv.detach()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float = 0.03, *, norm: Norm = "linf",
         labels: LabelSource = "true", mode: Mode = "eval", bounds: tuple[float, float] = (0.0, 1.0),
         transforms: tuple = (), forward: Optional[Forward] = None,
         loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
         generator: Optional[torch.Generator] = None) -> Tensor:
    """The fast gradient sign method (Goodfellow et al.; seed 002 ch. 3): x + ε · sign(∇ₓJ), clipped to ``bounds``."""
    return pgd(model, x, y, eps, eps, 1, random_start=False, norm=norm, labels=labels, mode=mode, bounds=bounds,
               transforms=transforms, forward=forward, loss_fn=loss_fn)


def margin_loss(output: Tensor, target: Tensor) -> Tensor:
    """Per example: the true class's logit minus the largest other logit (SPSA minimizes it; < 0: misclassified)."""
    true = output.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    others = output.scatter(-1, target.unsqueeze(-1), float("-inf"))
    return true - others.max(dim=-1).values


def spsa(model: nn.Module, x: Tensor, y: Tensor, eps: float = 0.03, steps: int = 100, *, lr: float = 0.01,
         delta: float = 0.01, samples: int = 128, norm: Norm = "linf", labels: LabelSource = "true",
         mode: Mode = "eval", bounds: tuple[float, float] = (0.0, 1.0), transforms: tuple = (),
         forward: Optional[Forward] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """SPSA (Uesato et al. 2018), gradient-free: Adam on the margin loss with finite-difference gradient estimates.

    Per step and example: ``samples`` Rademacher directions v in ± pairs, ĝ = mean_v v·(J(x+δv) − J(x−δv))/(2δ),
    one Adam step of size ``lr`` (β = 0.9, 0.999, ε̂ = 1e-8, TensorFlow's defaults, as in CleverHans) on the
    perturbation, then the projection onto the ε-ball and ``bounds``. Only forward passes, without gradients.
    """
    _check(eps, lr, steps, bounds)
    if delta <= 0 or samples < 2 or samples % 2:
        raise ValueError(f"spsa needs delta > 0 and an even samples ≥ 2 (got delta={delta}, samples={samples})")
    if generator is None:
        raise ValueError("spsa draws random directions: give a generator (attack_generator(seed, device))")
    check_bounds(x, bounds)
    call = preprocessed(forward or model, transforms, y)
    x = x.detach()
    n, half = x.shape[0], samples // 2
    with attack_mode(model, mode), torch.no_grad():
        target = _targets(call, x, y, labels)
        if target.is_floating_point():
            target = target.argmax(dim=-1)
        pert = torch.zeros_like(x)
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        for t in range(1, steps + 1):
            signs = torch.randint(0, 2, (n, half, *x.shape[1:]), generator=generator, device=x.device)
            d = (signs.to(x.dtype) * 2 - 1)
            probes = torch.cat([x.unsqueeze(1) + pert.unsqueeze(1) + delta * d,
                                x.unsqueeze(1) + pert.unsqueeze(1) - delta * d], 1)
            losses = margin_loss(call(probes.flatten(0, 1)), target.repeat_interleave(samples)).view(n, samples)
            diff = (losses[:, :half] - losses[:, half:]) / (2 * delta)
            grad = (diff.view(n, half, *[1] * (x.dim() - 1)) * d).mean(1)
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            rate = lr * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t)
            pert = _project(x + pert - rate * m / (v.sqrt() + 1e-8), x, eps, norm, bounds) - x
    return (x + pert).detach()


@dataclass(frozen=True)
class Attack:
    """A configured attack (a registered ``ATTACKS`` component): call it on a batch as the module docstring says."""

    name: str
    run: Callable[..., Tensor]
    params: dict = field(default_factory=dict)
    gradients: int = 0  # forward-backward passes per batch (what adversarial training adds per step)
    random: bool = False  # draws from its generator

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, transforms: tuple = (),
                 forward: Optional[Forward] = None, loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        extra = {"loss_fn": loss_fn} if self.name != "spsa" else {}
        return self.run(model, x, y, **self.params, transforms=transforms, forward=forward, generator=generator, **extra)

    @property
    def bounds(self) -> tuple[float, float]:
        return tuple(self.params["bounds"])  # type: ignore[return-value]


Bounds = tuple[float, float]


@ATTACKS.register("fgsm")
def fgsm_attack(eps: NonNegativeFloat = 0.03, norm: Norm = "linf", labels: LabelSource = "true", mode: Mode = "eval",
                bounds: Bounds = (0.0, 1.0)) -> Attack:
    """FGSM, x + ε·sign(∇ₓJ) in pixel units of the [0, 1] image (seed 002 ch. 3; default ε = .03, CIFAR)."""
    _check(eps, 0.0, 0, bounds)
    return Attack("fgsm", fgsm, {"eps": eps, "norm": norm, "labels": labels, "mode": mode, "bounds": tuple(bounds)},
                  gradients=1)


@ATTACKS.register("pgd")
def pgd_attack(eps: NonNegativeFloat = 0.03, step: NonNegativeFloat = 0.0078, steps: NonNegativeInt = 10,
               random_start: bool = True, norm: Norm = "linf", labels: LabelSource = "true", mode: Mode = "eval",
               bounds: Bounds = (0.0, 1.0)) -> Attack:
    """PGD, iterated FGSM projected onto the ε-ball, random start optional (seed 002 ch. 3; defaults: CIFAR, PGD-10)."""
    _check(eps, step, steps, bounds)
    params = {"eps": eps, "step": step, "steps": steps, "random_start": random_start, "norm": norm, "labels": labels,
              "mode": mode, "bounds": tuple(bounds)}
    return Attack("pgd", pgd, params, gradients=steps, random=random_start)


@ATTACKS.register("spsa")
def spsa_attack(eps: NonNegativeFloat = 0.03, steps: NonNegativeInt = 100, lr: PositiveFloat = 0.01,
                delta: PositiveFloat = 0.01, samples: PositiveInt = 128, norm: Norm = "linf",
                labels: LabelSource = "true", mode: Mode = "eval", bounds: Bounds = (0.0, 1.0)) -> Attack:
    """SPSA, gradient-free (Uesato et al. 2018; seed 002 Table 3.6); defaults in docs/adversarial.md."""
    _check(eps, lr, steps, bounds)
    if samples % 2:
        raise ValueError(f"spsa samples must be even (± pairs), got {samples}")
    params = {"eps": eps, "steps": steps, "lr": lr, "delta": delta, "samples": samples, "norm": norm,
              "labels": labels, "mode": mode, "bounds": tuple(bounds)}
    return Attack("spsa", spsa, params, gradients=0, random=True)
