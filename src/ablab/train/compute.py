"""How a run's arithmetic is placed and carried out: device choice, compact data, bf16, compile."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


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

    bf16 is ``torch.autocast``'s own op policy, the one a hand-written mixed-precision loop gets:
    convolutions and matmuls run in bfloat16; ``batch_norm`` takes their bf16 output but keeps its
    statistics, running averages, γ and β in float32 and computes in float32, rounding only its
    output to bf16 (which the next convolution would do anyway); ``group_norm`` and ``layer_norm``
    run in float32 on CUDA (autocast's float32 list) and, on the CPU, compute in float32 and round
    their output. The model's output is cast to float32, so losses and metrics are float32.
    Norm layers are not wrapped to return float32: a wrapper kept every normalised activation in
    float32 through the next ReLU (twice the memory traffic of those elementwise ops, plus two
    casts); with it, a preact_resnet18 step took 1.34x a hand-written loop's on an H200 (issue 10;
    ``benchmarks/bench_gpu.py`` measures the ratio).
    ``torch.compile`` caches compiled graphs per process; a later run with the same architecture
    reuses them (parameters are graph inputs, not constants).
    """
    fn = torch.compile(model) if compute.compile else model
    if compute.precision != "bf16":
        return fn

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = fn(x)
        return out.float()

    return forward
