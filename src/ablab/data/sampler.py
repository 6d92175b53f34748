"""Shuffled epochs of index batches, drawn from the data-order (``shuffle``) stream."""

from __future__ import annotations

import math
from typing import Iterator

import torch


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Optimizer steps in one pass over ``n`` examples."""
    steps = n // batch_size if drop_last else math.ceil(n / batch_size)
    if steps == 0:
        from ablab.errors import SpecError

        raise SpecError(f"batch_size {batch_size} with drop_last leaves no batch of {n} training examples", field="batch_size")
    return steps


def iterate_batches(
    n: int, batch_size: int, drop_last: bool, generator: torch.Generator, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """One epoch: a random permutation of ``range(n)`` cut into batches (last one partial unless dropped).

    The permutation is drawn on the CPU (the same order on every device) and moved to ``device``
    once per epoch (asynchronously on a GPU), so batches are index slices with no per-step
    host-to-device copy and no host synchronisation.
    """
    perm = torch.randperm(n, generator=generator)
    if torch.device(device).type == "cuda":  # pinned + non_blocking: the copy does not wait for the GPU
        perm = perm.pin_memory().to(device, non_blocking=True)
    else:
        perm = perm.to(device)
    stop = (n // batch_size) * batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield perm[start : start + batch_size]
