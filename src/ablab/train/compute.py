"""How a run's arithmetic is placed and carried out: device choice, compact data, bf16, compile."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable

import torch
from torch import nn


MALLOC_ENV = "ABLAB_MALLOC"  # "system": leave the C library's allocator settings as they are
KEEP_BYTES = 256 * 2**20  # blocks up to this size are reused from the heap, and this much free memory is kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make this process's C allocator (glibc) keep freed memory for reuse instead of handing it back.

    PyTorch takes every CPU tensor from ``malloc``. By default glibc serves a block above its mmap
    threshold (128 KiB, raised automatically as blocks are freed, to at most 32 MiB) with a fresh
    ``mmap`` that ``free`` unmaps, and gives the heap's free top back to the kernel above twice that;
    memory given back is faulted in again page by page when the next tensor takes it. Here both limits
    are 256 MiB: a freed block up to that size is reused as it is (tests/train/test_compute_allocator.py:
    a 64 MiB block freed and taken again faults in 0 pages instead of 16,385 each time), and a
    training process keeps up to 256 MiB of freed memory instead of returning it between steps.
    Measured (benchmarks/RESULTS.md, 2-core CPU, 1 thread per run): a single run's step is unchanged
    (``bench_loop.py`` part (c): 1.00-1.01x); ``studies/nondeterminism/cpu.yaml`` trained packed,
    where a packed step's tensors are R times a run's, takes 1.12x less wall time (every one of 7
    paired rounds faster; ``bench_replicas.py --study --study-allocator``), unpacked it is within the
    noise (0.93x and 1.10x in two sets of rounds). Arithmetic is unchanged (PyTorch aligns every
    block to 64 bytes either way; the bitwise tests run with it). ``ABLAB_MALLOC=system`` leaves the allocator alone. Returns
    whether the setting took (False off Linux/glibc or when turned off)."""
    value = os.environ.get(MALLOC_ENV, "").strip().lower()
    if value not in ("", "system"):
        from ablab.errors import AblabError

        raise AblabError(f"{MALLOC_ENV}={os.environ[MALLOC_ENV]!r} is not a setting: 'system' leaves the C library's "
                         "allocator as it is; unset it to let ablab keep freed memory for reuse")
    if value == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl) or none by that name
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))


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
