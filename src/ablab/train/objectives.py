"""Training objectives: what one optimizer step computes (registered in ``OBJECTIVES``).

An objective owns the forward and backward passes of one step::

    loss, output = objective.step(model, forward, optimizer, x, y)

``loss`` is the data loss of the clean batch (what the loop logs), ``output`` the clean batch's
model output (detached), both left on the device. The loop calls ``step`` and knows no objective
by name. An objective is built once per run from a ``StepSetup`` (the model, the optimizer, the
loss and where weight decay acts) plus its spec parameters, and declares how many gradient
evaluations one step costs (``gradient_evaluations``), which compute budgets divide by.

Adding one (adversarial training, say) is a class registered here; the loop does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Optional

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat
from torch import nn

from ablab.errors import SpecError
from ablab.optim.sam import SAM, asam_unscaled_params, bn_running_stats_frozen
from ablab.registry import ATTACKS, OBJECTIVES
from ablab.train.attacks import preprocessed
from ablab.train.robust import AttackSpec

Forward = Callable[[torch.Tensor], torch.Tensor]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


@dataclass
class StepSetup:
    """What an objective is built from: the run's model, optimizer, loss and weight-decay hooks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    penalty: Optional[Callable[[], torch.Tensor]] = None  # ``l2`` weight decay: added to the loss
    decouple: Optional[Callable[[], None]] = None  # ``decoupled`` weight decay: before each step
    transforms: tuple = ()  # the preprocessing a ``takes_pixels`` objective applies itself (trailing ``normalize``)

    def total(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss that is differentiated: the data loss plus the L2 penalty, if any."""
        return loss + self.penalty() if self.penalty is not None else loss

    def apply_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Decoupled decay (if any), then the optimizer's update."""
        if self.decouple is not None:
            self.decouple()
        optimizer.step()


def gradient_evaluations(spec: dict) -> int:
    """Forward-backward passes per step of the objective component ``spec`` (validated)."""
    factory = OBJECTIVES.get(spec["name"])
    params = {k: v for k, v in spec.items() if k != "name"}
    return int(factory.gradient_evaluations(**params))


@OBJECTIVES.register("standard")
class StandardStep:
    """One forward and backward pass on the batch, then one optimizer step."""

    def __init__(self, setup: StepSetup):
        self.setup = setup

    @staticmethod
    def gradient_evaluations() -> int:
        return 1

    def step(self, model: nn.Module, forward: Forward, optimizer: torch.optim.Optimizer, x, y):
        out = forward(x)
        loss = self.setup.loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        self.setup.total(loss).backward()
        self.setup.apply_step(optimizer)
        return loss, out.detach()


@OBJECTIVES.register("sam")
class SamStep:
    """SAM (Foret et al. 2021, Alg. 1) or ASAM (Kwon et al. 2021) around the run's optimizer.

    The clean pass's gradient gives the ascent step e = ρ T² g / ‖T g‖₂ (T = I, or |w| + η with
    ``adaptive``); the gradient at w + e gives the update, applied at w. BatchNorm running
    statistics are updated by the clean pass only (momentum 0 on the second, still train mode).
    ``adaptive_params``: ``weights`` scales only parameters whose name contains "weight", as the
    official ASAM code does (biases and norm β get T = 1); ``all`` scales every parameter.
    The logged loss is the clean one. Two gradient evaluations per step.
    """

    def __init__(
        self,
        setup: StepSetup,
        rho: PositiveFloat = 0.05,
        adaptive: bool = False,
        eta: NonNegativeFloat = 0.01,
        adaptive_params: Literal["weights", "all"] = "weights",
    ):
        self.setup = setup
        flat = [p for g in setup.optimizer.param_groups for p in g["params"]]
        trained = {id(p) for p in flat}  # frozen parameters are not the optimizer's
        unscaled = [p for p in asam_unscaled_params(setup.model, adaptive_params) if id(p) in trained] if adaptive else []
        self.sam = SAM(flat, setup.optimizer, rho=rho, adaptive=adaptive, eta=eta, unscaled=unscaled)

    @staticmethod
    def gradient_evaluations(rho: float = 0.05, adaptive: bool = False, eta: float = 0.01,
                             adaptive_params: str = "weights") -> int:
        return 2

    def step(self, model: nn.Module, forward: Forward, optimizer: torch.optim.Optimizer, x, y):
        out = forward(x)
        loss = self.setup.loss_fn(out, y)
        self.sam.zero_grad(set_to_none=True)
        self.setup.total(loss).backward()
        self.sam.first_step()
        with bn_running_stats_frozen(model):
            self.setup.total(self.setup.loss_fn(forward(x), y)).backward()
        self.sam.unperturb()
        self.setup.apply_step(optimizer)
        return loss, out.detach()


# ---------------------------------------------------------------- adversarial training (seed 002 ch. 3)


def squared_norm(logits: torch.Tensor) -> torch.Tensor:
    """‖f(x)‖² per example, averaged over the batch (logit squeezing's term, Eq. 3.11's β part)."""
    return logits.pow(2).sum(-1).mean()


def l2_pairing(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """ALP's pairing loss (Eq. 3.2–3.3): ½ Σ_c (ℓ_c − ℓ̃_c)² per example, averaged over the batch."""
    return 0.5 * (clean - adv).pow(2).sum(-1).mean()


def logit_cross_entropy(clean: torch.Tensor, adv: torch.Tensor, target: str = "adversarial") -> torch.Tensor:
    """h of Eq. 3.11, the cross-entropy between the distributions the logits induce, averaged over the batch.

    ``target`` ``adversarial``: −Σ sg(softmax(f(x̃))) · log softmax(f(x)) (the clean logits are pulled to the
    adversarial distribution); ``clean``: −Σ sg(softmax(f(x))) · log softmax(f(x̃)); ``none``: −Σ softmax(f(x)) ·
    log softmax(f(x̃)) with gradients into both (with the ratio coefficient a −log h term, unbounded below:
    it sharpens both distributions without limit; docs/adversarial_training.md)."""
    if target == "adversarial":
        return -(adv.detach().softmax(-1) * clean.log_softmax(-1)).sum(-1).mean()
    if target == "clean":
        return -(clean.detach().softmax(-1) * adv.log_softmax(-1)).sum(-1).mean()
    return -(clean.softmax(-1) * adv.log_softmax(-1)).sum(-1).mean()


def logit_dot(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """−2 f(x)ᵀ f(x̃) averaged over the batch: Eq. 3.10's cross term, with which Eq. 3.11 is L² pairing again."""
    return -2.0 * (clean * adv).sum(-1).mean()


def decoupled_pairing(h: torch.Tensor, clean: torch.Tensor, adv: torch.Tensor, beta: float,
                      coefficient: torch.Tensor | float) -> torch.Tensor:
    """Eq. 3.11 given h's value: c · h + β (‖f(x)‖² + ‖f(x̃)‖²)."""
    return coefficient * h + beta * (squared_norm(clean) + squared_norm(adv))


def ratio_coefficient(train_loss: torch.Tensor, h: torch.Tensor, ratio: float) -> torch.Tensor:
    """c = stop_gradient(J̃ / h) / ratio, recomputed every step, so c·h = J̃ / ratio (seed002 ref §3.1's reading)."""
    return (train_loss / h).detach() / ratio


def _pixel_range(data) -> tuple[float, float]:
    """The smallest and largest value of the training split (uint8 codes decode to [0, 1])."""
    x = data.splits["train"].x
    if x.dtype == torch.uint8 or not x.numel():
        return 0.0, 1.0
    return float(x.min()), float(x.max())


def _global_generator(device: torch.device) -> torch.Generator:
    """The global generator of ``device``: inside the training loop, the run's ``stochastic`` stream."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


class _AdversarialBase:
    """Shared by the adversarial objectives: the attack, crafting on pixels, and the checks against the data.

    ``takes_pixels``: the loop hands the step its batch before the trailing deterministic preprocessing
    (``normalize``), which the step applies inside its forward (``setup.transforms``), so the attack's ε is
    in pixel units of the [0, 1] image. The attack's random start draws from the global generator, which
    inside the training loop is the run's ``stochastic`` stream (saved in checkpoints: a continued run
    draws the same starts).
    """

    takes_pixels = True

    def __init__(self, setup: StepSetup, attack: dict, alpha: float):
        self.setup = setup
        self.attack_spec = attack
        self.attack = ATTACKS.create(attack)
        self.alpha = alpha

    def check(self, data) -> None:
        """SpecError unless the task is classification and the training pixels lie in the attack's bounds."""
        if data.task != "classification":
            raise SpecError(f"adversarial training attacks a classifier; dataset '{data.name}' is {data.task}")
        (lo, hi), (a, b) = _pixel_range(data), self.attack.bounds
        if lo < a or hi > b:
            raise SpecError(f"the training split of dataset '{data.name}' has values in [{lo:.4g}, {hi:.4g}], outside "
                            f"the attack's bounds [{a}, {b}]: ε is in pixel units of images in those bounds (normalize "
                            "with the 'normalize' augmentation, or set attack.bounds)", field="attack.bounds")

    def craft(self, model: nn.Module, forward: Forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch g(x) in pixels (the attack ascends the plain cross-entropy of the labels as mixed)."""
        generator = _global_generator(x.device) if self.attack.random else None
        return self.attack(model, x, y, transforms=self.setup.transforms, forward=forward, generator=generator)

    def call(self, forward: Forward, y: torch.Tensor) -> Forward:
        """``forward`` after the preprocessing the loop left to the step."""
        return preprocessed(forward, self.setup.transforms, y)

    def update(self, optimizer: torch.optim.Optimizer, objective: torch.Tensor) -> None:
        """Backward through ``objective`` (plus the L2 penalty, if any), then the optimizer's step."""
        optimizer.zero_grad(set_to_none=True)
        self.setup.total(objective).backward()
        self.setup.apply_step(optimizer)

    def data_loss(self, call: Forward, x: torch.Tensor, x_adv: Optional[torch.Tensor], y: torch.Tensor,
                  paired: bool = False):
        """Eq. 3.1's J̃ = α J(x) + (1 − α) J(g(x)), with the clean and adversarial logits (None where not needed)."""
        clean = call(x) if self.alpha > 0 or paired else None
        adv = call(x_adv) if self.alpha < 1 or paired else None
        loss_fn = self.setup.loss_fn
        if self.alpha == 0:
            return loss_fn(adv, y), clean, adv
        if self.alpha == 1:
            return loss_fn(clean, y), clean, adv
        return self.alpha * loss_fn(clean, y) + (1 - self.alpha) * loss_fn(adv, y), clean, adv

    def finish(self, loss: torch.Tensor, clean, adv):
        """What the loop logs: J̃ and the output on the adversarial batch (the clean one at α = 1)."""
        return loss.detach(), (adv if adv is not None else clean).detach()


def _attack_evaluations(attack: dict) -> int:
    return int(ATTACKS.create(attack).gradients)


def _update_evaluations(alpha: float) -> int:
    """Forward-backward passes of Eq. 3.1's update: one per batch it differentiates (clean and/or adversarial)."""
    return 1 if alpha in (0, 1) else 2


@OBJECTIVES.register("adversarial")
class AdversarialStep(_AdversarialBase):
    """Adversarial training (seed 002 Eq. 3.1): α·J(x) + (1 − α)·J(g(x)), g the nested attack; α = 0 (Tables 3.1–3.6).

    ``squeeze`` adds logit squeezing, β‖f‖² on the logits of every batch the update trains on (Fig. 3.1
    right: on top of PGD training). The attack's ``mode`` (eval by default, or train: batch statistics,
    running ones untouched) is the model's mode while crafting, recorded with the run. α = 1 is the
    ``standard`` step (no attack). Gradient evaluations: the attack's (PGD-k: k) plus one per batch the
    update differentiates (PGD-k training at α = 0: k + 1).
    """

    def __init__(self, setup: StepSetup, attack: AttackSpec = "pgd", alpha: Fraction = 0.0,
                 squeeze: NonNegativeFloat = 0.0):
        super().__init__(setup, attack, alpha)
        self.squeeze = squeeze

    @staticmethod
    def gradient_evaluations(attack: dict, alpha: float = 0.0, squeeze: float = 0.0) -> int:
        return 1 if alpha == 1 else _attack_evaluations(attack) + _update_evaluations(alpha)

    def step(self, model: nn.Module, forward: Forward, optimizer: torch.optim.Optimizer, x, y):
        call = self.call(forward, y)
        x_adv = self.craft(model, forward, x, y) if self.alpha < 1 else None
        loss, clean, adv = self.data_loss(call, x, x_adv, y)
        objective = loss
        if self.squeeze > 0:
            objective = objective + self.squeeze * sum(squared_norm(o) for o in (clean, adv) if o is not None)
        self.update(optimizer, objective)
        return self.finish(loss, clean, adv)


@OBJECTIVES.register("logit_squeezing")
class LogitSqueezingStep:
    """Logit squeezing on its own (seed 002 §3.3, Fig. 3.1 right): J(x) + β‖f(x)‖² on clean examples, no attack."""

    def __init__(self, setup: StepSetup, beta: PositiveFloat = 0.01):
        self.setup, self.beta = setup, beta

    @staticmethod
    def gradient_evaluations(beta: float = 0.01) -> int:
        return 1

    def step(self, model: nn.Module, forward: Forward, optimizer: torch.optim.Optimizer, x, y):
        out = forward(x)
        loss = self.setup.loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        self.setup.total(loss + self.beta * squared_norm(out)).backward()
        self.setup.apply_step(optimizer)
        return loss.detach(), out.detach()


@OBJECTIVES.register("alp")
class AlpStep(_AdversarialBase):
    """Adversarial logit pairing (seed 002 Eq. 3.2–3.3): J̃ + λ·½‖f(x) − f(g(x))‖²; λ 0.5 (CIFAR-10), 5.0 (CIFAR-100).

    J̃ is Eq. 3.1's (α = 0: adversarial examples only, as in Tables 3.1–3.6); the clean pass is made for the
    pairing term. ``squeeze`` adds β‖f‖² on the clean and adversarial logits (Fig. 3.1 right: it hurts on top
    of ALP). Gradient evaluations: the attack's plus two (clean and adversarial batches).
    """

    def __init__(self, setup: StepSetup, attack: AttackSpec = "pgd", weight: NonNegativeFloat = 0.5,
                 alpha: Fraction = 0.0, squeeze: NonNegativeFloat = 0.0):
        super().__init__(setup, attack, alpha)
        self.weight, self.squeeze = weight, squeeze

    @staticmethod
    def gradient_evaluations(attack: dict, weight: float = 0.5, alpha: float = 0.0, squeeze: float = 0.0) -> int:
        return _attack_evaluations(attack) + 2

    def terms(self, call: Forward, x, x_adv, y):
        """(objective, J̃, clean logits, adversarial logits) of one batch and its adversarial batch."""
        loss, clean, adv = self.data_loss(call, x, x_adv, y, paired=True)
        objective = loss + self.weight * l2_pairing(clean, adv)
        if self.squeeze > 0:
            objective = objective + self.squeeze * (squared_norm(clean) + squared_norm(adv))
        return objective, loss, clean, adv

    def step(self, model: nn.Module, forward: Forward, optimizer: torch.optim.Optimizer, x, y):
        x_adv = self.craft(model, forward, x, y)
        objective, loss, clean, adv = self.terms(self.call(forward, y), x, x_adv, y)
        self.update(optimizer, objective)
        return self.finish(loss, clean, adv)


@OBJECTIVES.register("decoupled_alp")
class DecoupledAlpStep(AlpStep):
    """Decoupled ALP (seed 002 Eq. 3.11): J̃ + c·h(f(x), f(g(x))) + β(‖f(x)‖² + ‖f(g(x))‖²), h the logits' cross-entropy.

    h: the cross-entropy of the clean distribution against the adversarial one taken as a fixed target
    (``target``; the seed leaves direction and gradient flow open; gradients into both diverge, see
    ``logit_cross_entropy``). c = stop_gradient(J̃ / h) / ``ratio``, recomputed each step, so the pairing term's value is J̃ / ratio
    and no gradient flows through c: an interpretation of the seed's "ratio between the adversarial
    training loss and the pairing loss" (0.125 on CIFAR-10, 0.95 on CIFAR-100 and SVHN), the only reading
    that matches both of its descriptions (docs/adversarial_training.md). β: 1e-3 CIFAR-10, 3e-5 CIFAR-100,
    1e-4 SVHN. With label smoothing (the loss) and a mixing augmentation it is LRM.
    """

    def __init__(self, setup: StepSetup, attack: AttackSpec = "pgd", ratio: PositiveFloat = 0.125,
                 beta: NonNegativeFloat = 1e-3, alpha: Fraction = 0.0,
                 target: Literal["adversarial", "clean", "none"] = "adversarial"):
        _AdversarialBase.__init__(self, setup, attack, alpha)
        self.ratio, self.beta, self.target = ratio, beta, target

    @staticmethod
    def gradient_evaluations(attack: dict, ratio: float = 0.125, beta: float = 1e-3, alpha: float = 0.0,
                             target: str = "adversarial") -> int:
        return _attack_evaluations(attack) + 2

    def terms(self, call: Forward, x, x_adv, y):
        """(objective, J̃, clean logits, adversarial logits) of one batch and its adversarial batch."""
        loss, clean, adv = self.data_loss(call, x, x_adv, y, paired=True)
        h = logit_cross_entropy(clean, adv, self.target)
        pairing = decoupled_pairing(h, clean, adv, self.beta, ratio_coefficient(loss, h, self.ratio))
        return loss + pairing, loss, clean, adv
