"""Independent, named random streams: one per source of nondeterminism.

A run's seeds are a ``{stream: int}`` mapping. Each stream's generator is seeded with a hash of
(stream name, seed), so ``init=0`` and ``shuffle=0`` are unrelated streams and changing one
source of randomness leaves every other draw of the run unchanged.

Two more sources of seed 002 ch. 5 (docs/nondeterminism.md): ``bitflip`` (a seed, or None: no
change) moves one weight of the first weight layer to the adjacent float32 value; ``kernels`` has
no seed, only a switch, the run's ``deterministic`` field (nondeterministic cuDNN/atomics on CUDA).

Bitwise reproducibility is guaranteed on CPU only; on CUDA it also needs ``deterministic: true``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from typing import Iterator, Optional

import torch
from torch import nn

RANDOM_SOURCES = ("init", "shuffle", "augment", "stochastic")
"""init: parameter initialisation; shuffle: data order; augment: augmentation draws;
stochastic: stochastic ops inside the model (dropout). What ``seeds.vary`` varies by default."""
STREAMS = (*RANDOM_SOURCES, "bitflip")
"""The streams with a seed; ``bitflip``: which weight moves by one ulp, and which way (None: none)."""
SOURCES = (*STREAMS, "kernels")
"""What ``seeds.vary`` accepts; ``kernels`` has no seed: varying it sets ``deterministic: false``."""


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


def kernels_record(deterministic: bool, device: torch.device) -> dict:
    """What the ``kernels`` source did in a run (stored in the run's info; the report reads it).

    Only CUDA has nondeterministic kernels (cuDNN autotuning, atomic adds); on the CPU both modes
    compute the same bits, so ``has_effect`` is False there.
    """
    return {"deterministic": deterministic, "has_effect": device.type == "cuda"}


def first_weight(model: nn.Module) -> tuple[str, nn.Parameter]:
    """The weight of the model's first weight layer: the first parameter (in registration order, which is
    forward order for ablab's models) named ``weight`` with ≥ 2 dimensions (a conv or linear, not a norm)."""
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "weight" and param.dim() >= 2:
            return name, param
    raise ValueError("the model has no weight layer (a parameter 'weight' with 2 or more dimensions) for the bit "
                     "change; use seeds.bitflip: null")


def bitflip_choice(seed: int, numel: int) -> tuple[int, bool]:
    """(flat index, up?) of the bit change: a function of the ``bitflip`` seed and the tensor size only.

    Seed 002 §5.4.1 (authors' code): ``randint`` picks the index in the flattened weight, ``rand > .5`` goes up.
    """
    gen = create_generator("bitflip", seed)
    index = int(torch.randint(numel, (1,), generator=gen))
    up = bool(torch.rand(1, generator=gen) > 0.5)
    return index, up


def flip_one_weight_(model: nn.Module, seed: Optional[int]) -> Optional[dict]:
    """Move one weight of the first weight layer to the adjacent float32 value (``nextafter``), in place.

    Returns what changed (parameter, flat index in row-major order, direction, old and new value), or
    None for ``seed`` None. Works on any device and memory format (channels-last included).
    """
    if seed is None:
        return None
    name, weight = first_weight(model)
    index, up = bitflip_choice(seed, weight.numel())
    at = tuple(int(i) for i in torch.unravel_index(torch.tensor(index), weight.shape))
    with torch.no_grad():
        old = weight[at].clone()
        toward = torch.full_like(old, math.inf if up else -math.inf)
        weight[at] = torch.nextafter(old, toward)
        new = weight[at].item()
    return {"parameter": name, "index": index, "direction": "up" if up else "down", "before": old.item(),
            "after": new}
