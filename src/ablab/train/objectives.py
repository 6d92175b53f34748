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
from typing import Callable, Literal, Optional

import torch
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn

from ablab.optim.sam import SAM, asam_unscaled_params, bn_running_stats_frozen
from ablab.registry import OBJECTIVES

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepSetup:
    """What an objective is built from: the run's model, optimizer, loss and weight-decay hooks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    penalty: Optional[Callable[[], torch.Tensor]] = None  # ``l2`` weight decay: added to the loss
    decouple: Optional[Callable[[], None]] = None  # ``decoupled`` weight decay: before each step

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
