"""Independent, named random streams: one per source of nondeterminism.

A run's seeds are a ``{stream: int}`` mapping. Each stream's generator is seeded with a hash of
(stream name, seed), so ``init=0`` and ``shuffle=0`` are unrelated streams and changing one
source of randomness leaves every other draw of the run unchanged.

Bitwise reproducibility is guaranteed on CPU only; on CUDA it also needs ``deterministic: true``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Iterator

import torch

STREAMS = ("init", "shuffle", "augment", "stochastic")
"""init: parameter initialisation; shuffle: data order; augment: augmentation draws;
stochastic: stochastic ops inside the model (dropout)."""


def derive_seed(stream: str, seed: int) -> int:
    """A 63-bit seed for ``stream`` from the user's integer seed (sha256 of both)."""
    digest = hashlib.sha256(f"ablab:{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def create_generator(stream: str, seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for ``stream``."""
    return torch.Generator(device=device).manual_seed(derive_seed(stream, seed))


@contextlib.contextmanager
def init_scope(seed: int) -> Iterator[None]:
    """Build modules inside: parameter initialisation draws from the ``init`` stream (CPU).

    PyTorch's layer constructors draw from the global CPU generator; it is forked, seeded
    and restored, so nothing outside the block is affected.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(derive_seed("init", seed))
        yield


@contextlib.contextmanager
def stochastic_scope(seed: int, device: torch.device) -> Iterator[None]:
    """Train inside: dropout and other in-model draws use the ``stochastic`` stream."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        s = derive_seed("stochastic", seed)
        torch.random.default_generator.manual_seed(s)
        if device.type == "cuda":
            torch.cuda.manual_seed(s)
        yield


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Select deterministic kernels (cuDNN and others) for the block; restores the old setting."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    fill = torch.utils.deterministic
    old = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        fill.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    # deterministic mode would NaN-fill every new tensor (an extra kernel each); the loop never
    # reads uninitialised memory, so results stay deterministic without it
    fill.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[1], old[2]
        fill.fill_uninitialized_memory = old[3]
