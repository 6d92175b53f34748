"""How a run's arithmetic is placed and carried out: device choice, compact data, bf16, compile."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ablab.optim.groups import is_norm_module


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def compact_on(device: torch.device) -> bool:
    """Keep 8-bit image datasets as uint8 on this device? On a GPU: a quarter of the memory (several
    runs may share one) and of the host-to-device copy, for one cast per batch. On the CPU the float32
    copy exists already (the loaders' cache), so decoding every batch would only cost time."""
    return device.type == "cuda"


def make_forward(model: nn.Module, compute, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as the loop calls it: optionally compiled, optionally under bf16 autocast.

    Under bf16 the norm layers still compute in float32 and the output is cast back to float32,
    so losses and metrics are float32. ``torch.compile`` caches compiled graphs per process; a
    later run with the same architecture reuses them (parameters are graph inputs, not constants).
    """
    fn = torch.compile(model) if compute.compile else model
    if compute.precision != "bf16":
        return fn
    for m in model.modules():
        if is_norm_module(m):
            m.forward = _fp32_forward(m.forward)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return fn(x).float()

    return forward


def _fp32_forward(inner: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return inner(x.float())

    return forward
