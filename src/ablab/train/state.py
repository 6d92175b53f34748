"""The training state: everything a run's future depends on, saved and restored in one call each.

``TrainState`` holds the model, the optimizer, the step and epoch, every random stream (the data
order, the augmentation generator and the global generator in-model stochastic ops draw from) and
the logging accumulator. A checkpoint is ``checkpoint.save(state.state_dict())``; continuing a run
is ``state.load_state_dict(checkpoint)`` in set-up, before the loop starts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ablab import seeding
from ablab.artifacts import CHECKPOINT_FORMAT
from ablab.train import checkpoint as ckpt


class Running:
    """Training metrics between recordings, kept on the device: one host sync per read.

    Loss: the mean over every step since the last read (one add per step). Accuracy: of the
    batch at the recording step only; scoring every batch costs ~5 % of a small MLP's step.
    """

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.batches = 0

    def add(self, loss: torch.Tensor) -> None:
        self.loss.add_(loss.detach())
        self.batches += 1

    def read(self) -> float:
        loss = self.loss.item() / self.batches
        self.loss.zero_()
        self.batches = 0
        return loss


@dataclass
class Restored:
    """What ``load_state_dict`` took from a checkpoint: the streams it continued, the optimizer state or not."""

    streams: list[str]
    optimizer: bool


@dataclass
class TrainState:
    """A run's training state. ``epoch``: the epoch in progress; at an epoch's end, the epochs completed.

    ``optimizer_spec`` keys the optimizer state: a checkpoint's is loaded only by a run with the
    same optimizer over the same parameter groups. The stochastic stream is the global generator
    inside ``stochastic_stream()``; ``state_dict()`` is taken inside it.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    seeds: dict[str, Any]
    optimizer_spec: str
    shuffle: torch.Generator
    augment: torch.Generator
    running: Running
    step: int = 0
    epoch: int = 0
    _stochastic: Optional[dict[str, torch.Tensor]] = field(default=None, repr=False)  # restored, set on entry

    @classmethod
    def create(cls, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, seeds: dict[str, Any],
               optimizer_spec: str) -> "TrainState":
        """The state before the first step: each stream seeded from its source's seed."""
        return cls(model, optimizer, device, dict(seeds), optimizer_spec,
                   shuffle=seeding.create_generator("shuffle", seeds["shuffle"]),
                   augment=seeding.create_generator("augment", seeds["augment"], device),
                   running=Running(device))

    @contextlib.contextmanager
    def stochastic_stream(self) -> Iterator[None]:
        """Train inside: in-model draws (dropout) come from the ``stochastic`` stream, restored if continued."""
        with seeding.stochastic_scope(self.seeds["stochastic"], self.device):
            if self._stochastic is not None:
                ckpt.set_stochastic_state(self._stochastic, self.device)
            yield

    def state_dict(self) -> dict[str, Any]:
        """The state as plain tensors and values on the CPU (checkpoint layout ``FORMAT`` 1)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "seeds": dict(self.seeds),
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "optimizer_spec": self.optimizer_spec,
            "rng": {"shuffle": self.shuffle.get_state(), "augment": self.augment.get_state().cpu(),
                    "stochastic": ckpt.stochastic_state(self.device)},
            "running": {"loss": self.running.loss.detach().cpu(), "batches": self.running.batches},
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "the checkpoint") -> Restored:
        """Continue from ``state``: the model, step, epoch and accumulator; the optimizer state where
        ``optimizer_spec`` matches; each random stream whose seed is unchanged (a changed one starts
        afresh from its new seed here). ``source`` names the checkpoint in errors."""
        ckpt.restore_model(self.model, state, source)
        same_optimizer = state.get("optimizer_spec") == self.optimizer_spec
        if same_optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
        keep = ckpt.kept_streams(state["seeds"], self.seeds)
        rng = state["rng"]
        if "shuffle" in keep:
            self.shuffle.set_state(rng["shuffle"])
        if "augment" in keep:
            self.augment.set_state(rng["augment"])  # generator states are CPU byte tensors on every device
        self._stochastic = rng["stochastic"] if "stochastic" in keep else None
        self.running.loss.copy_(state["running"]["loss"])
        self.running.batches = state["running"]["batches"]
        self.step, self.epoch = state["step"], state["epoch"]
        return Restored(sorted(keep), same_optimizer)
