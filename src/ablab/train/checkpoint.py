"""Checkpoints: a run's full training state at an epoch boundary, and restoring it.

A checkpoint holds the model (parameters and buffers), the optimizer's state, the step and
epoch (the schedule is a function of the step), the logging accumulator, the run's seeds, and the
state of every random stream: the data order (``shuffle``), the augmentation generator and the
in-model stochastic ops (the global generator inside ``seeding.stochastic_scope``). A run continued
from it with the same seeds is bitwise the run that never stopped (CPU; CUDA needs deterministic
kernels). A stream whose seed differs in the continuing run starts afresh from its new seed at the
restored epoch: that is how "vary one source from epoch N" is expressed (seed 002 §5.3.4).

Files are ``torch.save`` dicts of tensors and plain values, read with ``weights_only=True``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ablab.artifacts import save_checkpoint

RANDOM_STREAMS = ("shuffle", "augment", "stochastic")  # streams with a state after initialisation


def stochastic_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generator(s) that in-model stochastic ops draw from (inside ``stochastic_scope``)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_stochastic_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def capture(
    *, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, epoch: int, seeds: dict[str, int],
    shuffle: torch.Generator, augment: torch.Generator, device: torch.device, running: tuple[torch.Tensor, int],
    optimizer_spec: str = "",
) -> bytes:
    """The training state after ``epoch`` (``step`` optimizer steps) as bytes."""
    state = {
        "step": step,
        "epoch": epoch,
        "seeds": dict(seeds),
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "optimizer_spec": optimizer_spec,
        "rng": {"shuffle": shuffle.get_state(), "augment": augment.get_state().cpu(),
                "stochastic": stochastic_state(device)},
        "running": {"loss": running[0].detach().cpu(), "batches": running[1]},
    }
    return save_checkpoint(state)


def kept_streams(source_seeds: dict[str, int], seeds: dict[str, int]) -> set[str]:
    """Streams whose state is restored: those whose seed the continuing run did not change."""
    return {s for s in RANDOM_STREAMS if source_seeds.get(s) == seeds.get(s)}


def restore_model(model: nn.Module, state: dict[str, Any], source: str) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"the checkpoint of {source} does not fit this run's model "
                         f"(was the model changed?): {first[1].strip() if len(first) > 1 else first[0]}") from None


def restore_generators(state: dict[str, Any], keep: set[str], shuffle: torch.Generator,
                       augment: torch.Generator, device: torch.device) -> Optional[dict[str, torch.Tensor]]:
    """Restore the kept streams' generators; returns the stochastic state to set inside its scope (or None)."""
    rng = state["rng"]
    if "shuffle" in keep:
        shuffle.set_state(rng["shuffle"])
    if "augment" in keep:
        augment.set_state(rng["augment"])  # generator states are CPU byte tensors on every device
    return rng["stochastic"] if "stochastic" in keep else None
