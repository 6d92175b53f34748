"""Registered learning-rate schedules: factories returning ``factor(step) -> float``.

The engine sets ``lr = base_lr · factor(step)`` before each optimizer step. Durations are
given in steps or epochs (never both) and converted to steps once, here.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from ablab.errors import SpecError
from ablab.registry import SCHEDULES

Schedule = Callable[[int], float]


def _steps(steps: Optional[int], epochs: Optional[float], steps_per_epoch: int) -> int:
    if steps is not None:
        return steps
    return round(epochs * steps_per_epoch) if epochs is not None else 0


def _warmup(factor: Schedule, warmup: int) -> Schedule:
    """Linear warmup: factor rises as (step+1)/warmup over the first ``warmup`` steps."""
    if warmup <= 0:
        return factor
    return lambda step: factor(step) * min(1.0, (step + 1) / warmup)


@SCHEDULES.register("constant")
def constant(
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: Optional[NonNegativeInt] = None,
    warmup_epochs: Optional[NonNegativeFloat] = None,
) -> Schedule:
    """Constant learning rate, with optional linear warmup."""
    return _warmup(lambda step: 1.0, _steps(warmup_steps, warmup_epochs, steps_per_epoch))


@SCHEDULES.register("step")
def step_decay(
    total_steps: int,
    steps_per_epoch: int,
    milestones_epochs: Optional[list[NonNegativeFloat]] = None,
    milestones_steps: Optional[list[NonNegativeInt]] = None,
    gamma: PositiveFloat = 0.1,
    warmup_steps: Optional[NonNegativeInt] = None,
    warmup_epochs: Optional[NonNegativeFloat] = None,
) -> Schedule:
    """Multiply the lr by gamma at each milestone, with optional linear warmup."""
    if milestones_epochs is None and milestones_steps is None:
        raise SpecError("give milestones_epochs or milestones_steps", field="milestones_epochs")
    if milestones_steps is not None:
        marks = sorted(milestones_steps)
    else:
        marks = sorted(round(e * steps_per_epoch) for e in milestones_epochs)
    return _warmup(
        lambda step: gamma ** sum(step >= m for m in marks),
        _steps(warmup_steps, warmup_epochs, steps_per_epoch),
    )


@SCHEDULES.register("cosine")
def cosine(
    total_steps: int,
    steps_per_epoch: int,
    final_factor: NonNegativeFloat = 0.0,
    warmup_steps: Optional[NonNegativeInt] = None,
    warmup_epochs: Optional[NonNegativeFloat] = None,
    t_max_steps: Optional[PositiveInt] = None,
    t_max_epochs: Optional[PositiveFloat] = None,
) -> Schedule:
    """Cosine annealing from the base lr to final_factor·lr over the run (after warmup).

    With T = ``t_max_steps``/``t_max_epochs`` (PyTorch's ``T_max`` of CosineAnnealingLR), the factor is
    PyTorch's closed form m + (1 − m)·(1 + cos(π·t/T))/2 for every t ≥ 0 after warmup
    (``CosineAnnealingLR``, Loshchilov & Hutter 2017 eq. 5 without restarts): it reaches m at
    t = T and climbs back to 1 at t = 2T. Without a period, T is the whole run and t stops at T.
    """
    warmup = _steps(warmup_steps, warmup_epochs, steps_per_epoch)
    period = _steps(t_max_steps, t_max_epochs, steps_per_epoch)
    if (t_max_steps is not None or t_max_epochs is not None) and period < 1:
        raise SpecError(f"t_max_epochs={t_max_epochs} is less than one step ({steps_per_epoch} steps per epoch)",
                        field="t_max_epochs")
    span = period or max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / span
        if not period:
            t = min(1.0, t)
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


@SCHEDULES.register("piecewise")
def piecewise(
    total_steps: int,
    steps_per_epoch: int,
    factors: list[NonNegativeFloat],
    boundaries_steps: Optional[list[PositiveInt]] = None,
    boundaries_epochs: Optional[list[PositiveFloat]] = None,
) -> Schedule:
    """Piecewise-constant lr: factor factors[i] from boundary i − 1 (inclusive) to boundary i (TF's piecewise_constant).

    factor(step) = factors[#{b ∈ boundaries : step ≥ b}], so len(factors) = len(boundaries) + 1.
    Seed 002 ch. 2 (L451): base lr 0.1 with boundaries_steps [400, 32000, 48000, 70000] and factors
    [0.1, 1, 0.1, 0.01, 0.001] is .01 for 400 steps (a constant warm-up level, not a ramp), then .1, ÷10 at each.
    """
    if (boundaries_steps is None) == (boundaries_epochs is None):
        raise SpecError("give boundaries_steps or boundaries_epochs (one of them)", field="boundaries_steps")
    field = "boundaries_steps" if boundaries_steps is not None else "boundaries_epochs"
    marks = boundaries_steps if boundaries_steps is not None else [round(e * steps_per_epoch) for e in boundaries_epochs]
    if any(b >= a for a, b in zip(marks[1:], marks)):
        raise SpecError(f"{field} must increase strictly, got {marks}", field=field)
    if len(factors) != len(marks) + 1:
        raise SpecError(f"{len(marks)} boundaries need {len(marks) + 1} factors, got {len(factors)}", field="factors")
    return lambda step: factors[sum(step >= m for m in marks)]


@SCHEDULES.register("snapshot_cosine")
def snapshot_cosine(
    total_steps: int,
    steps_per_epoch: int,
    cycles: PositiveInt = 5,
    warmup_steps: Optional[NonNegativeInt] = None,
    warmup_epochs: Optional[NonNegativeFloat] = None,
) -> Schedule:
    """Snapshot ensembles' cyclic schedule (Huang et al. 2017; seed 002 §5.5 "accelerated ensemble").

    The run is ``cycles`` equal cycles of C steps. With t the step within its cycle, the factor
    is (t + 1)/W during the cycle's warm-up of W steps, then ½·(1 + cos(π·(t + 1)/C)), the
    cosine's phase counted from the cycle's start as in the authors' code. The last step of each
    cycle has lr 0: there the model is a snapshot (``record.checkpoints.snapshots``).
    """
    if total_steps % cycles:
        raise SpecError(f"{total_steps} steps do not split into {cycles} equal cycles; give 'epochs' divisible by "
                        "'cycles'", field="cycles")
    cycle = total_steps // cycles
    warmup = _steps(warmup_steps, warmup_epochs, steps_per_epoch)
    if warmup >= cycle:
        raise SpecError(f"the warm-up ({warmup} steps) fills the whole cycle ({cycle} steps)", field="warmup_epochs")

    def factor(step: int) -> float:
        t = step % cycle
        if t < warmup:
            return (t + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (t + 1) / cycle))

    return factor


def _snapshot_cycle_ends(schedule: dict, epochs: Optional[int]) -> list[int]:
    """The epochs after which the cycles end (the snapshots); ``ValueError`` unless they are whole epochs."""
    cycles = schedule["cycles"]
    if epochs is None:
        raise ValueError("schedule 'snapshot_cosine' cuts the run into cycles of whole epochs: give 'epochs'")
    if epochs % cycles:
        raise ValueError(f"schedule 'snapshot_cosine': {epochs} epochs do not split into {cycles} equal "
                         f"cycles; make 'epochs' a multiple of 'cycles'")
    return [epochs // cycles * k for k in range(1, cycles + 1)]


# A cyclic schedule declares where its cycles end (RunSpec.snapshot_epochs, record.checkpoints.snapshots).
snapshot_cosine.cycle_end_epochs = _snapshot_cycle_ends  # type: ignore[attr-defined]
