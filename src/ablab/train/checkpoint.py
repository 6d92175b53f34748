"""Checkpoint files: ``TrainState.state_dict()`` as bytes, and reading them back.

A checkpoint holds the model (parameters and buffers), the optimizer's state, the step and
epoch (the schedule is a function of the step), the logging accumulator, the run's seeds, and the
state of every random stream: the data order (``shuffle``), the augmentation generator and the
in-model stochastic ops (the global generator inside ``seeding.stochastic_scope``). A run continued
from it with the same seeds is bitwise the run that never stopped (CPU; CUDA needs deterministic
kernels). A stream whose seed differs in the continuing run starts afresh from its new seed at the
restored epoch: that is how "vary one source from epoch N" is expressed (seed 002 §5.3.4).

The file format (``torch.save`` dicts of tensors and plain values, layout 1 unchanged since the
first stored study, read with ``weights_only=True``) and the file names are ``ablab.artifacts``'.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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
