"""Samplers (registered in ``SAMPLERS``): which training examples form each batch of an epoch.

Every sampler draws from the run's data-order (``shuffle``) stream only, on the CPU, so the same
seed gives the same batches on every device, and a continued run (whose checkpoint holds that
stream's state at the end of an epoch) draws the same batches as an uninterrupted one.

- ``iid`` (the default): an epoch is a random permutation of the training split cut into batches.
- ``non_iid`` (seed 002 §4.4.4, Table 4.1): each batch is k classes drawn uniformly *with
  replacement* from the training split's classes, B/k examples per draw (a class drawn twice fills
  2B/k slots). An epoch is ⌊n/B⌋ such batches (as many examples as an i.i.d. epoch without its
  partial batch; the seed does not say). The batch's examples come in random order (``order:
  blocks`` keeps each draw's examples consecutive, which matters to ghost BN's groups only).
"""

from __future__ import annotations

import math
from typing import Iterator, Literal, Optional

import torch
from pydantic import PositiveInt

from ablab.registry import SAMPLERS


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Optimizer steps in one pass over ``n`` examples."""
    steps = n // batch_size if drop_last else math.ceil(n / batch_size)
    if steps == 0:
        from ablab.errors import SpecError

        raise SpecError(f"batch_size {batch_size} with drop_last leaves no batch of {n} training examples", field="batch_size")
    return steps


def _to_device(idx: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Indices drawn on the CPU, moved once (pinned and asynchronous on a GPU: no host synchronisation)."""
    if torch.device(device).type == "cuda":
        return idx.pin_memory().to(device, non_blocking=True)
    return idx.to(device)


def iterate_batches(
    n: int, batch_size: int, drop_last: bool, generator: torch.Generator, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """One epoch: a random permutation of ``range(n)`` cut into batches (last one partial unless dropped).

    The permutation is drawn on the CPU (the same order on every device) and moved to ``device``
    once per epoch (asynchronously on a GPU), so batches are index slices with no per-step
    host-to-device copy and no host synchronisation.
    """
    perm = _to_device(torch.randperm(n, generator=generator), device)
    stop = (n // batch_size) * batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield perm[start : start + batch_size]


class IidSampler:
    """Shuffled epochs: every example once per epoch (``iterate_batches``)."""

    def check(self, batch_size: int) -> None:
        """Any batch size will do (a too large one is the duration's error)."""

    def steps_per_epoch(self, n: int, batch_size: int, drop_last: bool) -> int:
        return steps_per_epoch(n, batch_size, drop_last)

    def epoch(self, n: int, batch_size: int, drop_last: bool, generator: torch.Generator,
              device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        return iterate_batches(n, batch_size, drop_last, generator, device)


class NonIidSampler:
    """Batches of k classes drawn with replacement × B/k examples each; an epoch is ⌊n/B⌋ batches.

    Within a class, examples are taken from a fresh random permutation of its members (again when
    it runs out), so a class drawn twice in one batch gives 2B/k distinct examples where it has them.
    ``order``: ``shuffled`` (the default) puts the batch's examples in random order, so a ghost group of
    B′ examples holds a random subset of the batch's k classes; ``blocks`` keeps each draw's B/k
    examples consecutive (a ghost group of B′ ≤ B/k then sees one class, whose own mean it removes).
    The seed does not say; its ghost-BN rows (Table 4.1: B′ = 2…32, every one a group within one
    32-example class block if the blocks were kept, at 57.8–70.4 %, all above BN's 40.1) read as
    mixed groups, hence the default.
    """

    def __init__(self, k: int, labels: torch.Tensor, order: str = "shuffled"):
        self.k = k
        self.order = order
        labels = labels.detach().to("cpu")
        self.classes = torch.unique(labels)
        self.members = [torch.nonzero(labels == c).flatten() for c in self.classes]

    def check(self, batch_size: int) -> None:
        """k classes exist and divide the batch (ValueError otherwise)."""
        if self.k > len(self.classes):
            raise ValueError(f"non_iid: k = {self.k} classes per batch, but the training split has only "
                             f"{len(self.classes)} classes")
        if batch_size % self.k:
            raise ValueError(f"non_iid: k = {self.k} does not divide batch_size {batch_size}")

    def steps_per_epoch(self, n: int, batch_size: int, drop_last: bool) -> int:
        self.check(batch_size)
        return steps_per_epoch(n, batch_size, True)

    def epoch(self, n: int, batch_size: int, drop_last: bool, generator: torch.Generator,
              device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        per = batch_size // self.k
        for _ in range(self.steps_per_epoch(n, batch_size, drop_last)):
            drawn = torch.randint(len(self.classes), (self.k,), generator=generator)
            counts = torch.bincount(drawn, minlength=len(self.classes))
            order = list(dict.fromkeys(drawn.tolist()))  # each drawn class once, in the order first drawn
            batch = torch.cat([self._take(c, int(counts[c]) * per, generator) for c in order])
            if self.order == "shuffled":
                batch = batch[torch.randperm(len(batch), generator=generator)]
            yield _to_device(batch, device)

    def _take(self, c: int, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` examples of class ``c``: permutations of its members, concatenated as needed."""
        members = self.members[c]
        rounds = -(-count // len(members))
        order = torch.cat([members[torch.randperm(len(members), generator=generator)] for _ in range(rounds)])
        return order[:count]


@SAMPLERS.register("iid")
def iid(labels: Optional[torch.Tensor] = None) -> IidSampler:
    """I.i.d. batches (the default): an epoch is a random permutation of the training split cut into batches."""
    return IidSampler()


@SAMPLERS.register("non_iid")
def non_iid(k: PositiveInt = 4, order: Literal["shuffled", "blocks"] = "shuffled",
            labels: Optional[torch.Tensor] = None) -> NonIidSampler:
    """Non-i.i.d. batches: k classes drawn with replacement × B/k examples; an epoch is ⌊n/B⌋ batches (seed 002 §4.4.4).

    ``order``: the batch's examples in random order (``shuffled``) or each class's consecutive (``blocks``)."""
    if labels is None or labels.dtype.is_floating_point or labels.ndim != 1:
        raise ValueError("non_iid draws batches by class: it needs a classification dataset with integer labels")
    return NonIidSampler(k, labels, order)
