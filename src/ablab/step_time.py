"""How long one training step of a run takes on its device, measured on real steps before a study.

``ablab validate`` multiplies it by the study's training steps for a cost estimate. Measured: the
run's own model, optimizer and objective on its first training batch (augmentations, evaluation,
probes and recording not included, so the estimate is a lower bound of the study's time). The first
steps pay for allocation, kernel selection and caches: they are a warm-up of at least
``WARMUP_STEPS`` and ``WARMUP_SECONDS``, untimed. Then steps are timed until ``MIN_STEPS`` and
``MIN_SECONDS`` are both reached (or, for slow steps, ``MAX_SECONDS`` with at least ``FEW_STEPS``):
a few milliseconds of a busy machine do not decide the estimate. The range is the fastest and
slowest of ``BLOCKS`` consecutive blocks of the timed steps.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from ablab.spec import RunSpec

WARMUP_STEPS = 3
WARMUP_SECONDS = 0.1
MIN_STEPS = 20
MIN_SECONDS = 0.3
MAX_SECONDS = 5.0
FEW_STEPS = 3
BLOCKS = 5


@dataclass(frozen=True)
class StepTime:
    """Seconds per training step: the mean over the timed steps, and the fastest and slowest block's mean."""

    seconds: float
    low: float
    high: float
    steps: int  # timed steps
    warmup: int  # untimed steps before them
    load: tuple[float, float, float] | None = None  # os.getloadavg() when measured (None where unknown)
    device: str = "cpu"  # where the steps ran (the spec's ``auto`` resolved)

    def load_text(self) -> str:
        """``load average 1.8 on 2 cores`` (the last minute's), said to be busy above the core count."""
        cores = os.cpu_count() or 1
        if self.load is None:
            return f"load average unknown, {cores} cores"
        busy = ": a busy machine, the time will follow its load" if self.load[0] > cores else ""
        return f"load average {self.load[0]:.1f} on {cores} cores{busy}"


def measure_step_seconds(spec: RunSpec, threads: int | None = None, min_steps: int = MIN_STEPS,
                         min_seconds: float = MIN_SECONDS) -> StepTime:
    """The step time of ``spec`` on its device, with ``threads`` intra-op CPU threads (a run's own count:
    cores ÷ workers; None: this process's)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _timed_steps(spec, min_steps, min_seconds)
    finally:
        torch.set_num_threads(previous)


def _timed_steps(spec: RunSpec, min_steps: int, min_seconds: float) -> StepTime:
    from ablab.train.build import build_run

    run = build_run(spec)
    train = run.data.splits["train"]
    index = torch.arange(min(spec.batch_size, len(train)), device=run.device)
    x, y = train.rows(index)
    x = run.layout(x)
    run.model.train()

    def step() -> float:
        run.objective.step(run.model, run.forward, run.optimizer, x, y)
        _sync(run.device)
        return time.perf_counter()

    warmup, start = 0, time.perf_counter()
    while warmup < WARMUP_STEPS or time.perf_counter() - start < WARMUP_SECONDS:
        step()
        warmup += 1
    stamps = [time.perf_counter()]
    while not _enough(len(stamps) - 1, stamps[-1] - stamps[0], min_steps, min_seconds):
        stamps.append(step())
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    blocks = _block_means(durations)
    return StepTime(sum(durations) / len(durations), min(blocks), max(blocks), len(durations), warmup, _load(),
                    str(run.device))


def _enough(steps: int, seconds: float, min_steps: int, min_seconds: float) -> bool:
    return (steps >= min_steps and seconds >= min_seconds) or (steps >= FEW_STEPS and seconds >= MAX_SECONDS)


def _block_means(durations: list[float]) -> list[float]:
    """Mean step time of each of ``BLOCKS`` consecutive blocks (fewer with fewer steps)."""
    k = min(BLOCKS, len(durations))
    edges = [round(i * len(durations) / k) for i in range(k + 1)]
    return [sum(durations[a:b]) / (b - a) for a, b in zip(edges, edges[1:])]


def _load() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # not available on this platform
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
