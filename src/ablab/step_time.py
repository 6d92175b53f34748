"""How long one training step of a run takes on its device, measured on a few real steps before a study.

``ablab validate`` multiplies it by the study's training steps for a cost estimate. Measured: the
run's own model, optimizer and objective on its first training batch (augmentations, evaluation,
probes and recording not included, so the estimate is a lower bound of the study's time).
"""

from __future__ import annotations

import time

import torch

from ablab.spec import RunSpec

WARMUP_STEPS = 2  # first steps pay for allocation, kernel selection and caches
TIMED_STEPS = 5


def measure_step_seconds(spec: RunSpec, timed: int = TIMED_STEPS, threads: int | None = None) -> float:
    """Mean wall time of ``timed`` optimizer steps after ``WARMUP_STEPS``, on the spec's device, with
    ``threads`` intra-op CPU threads (a run's own count: cores ÷ workers; None: this process's)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _timed_steps(spec, timed)
    finally:
        torch.set_num_threads(previous)


def _timed_steps(spec: RunSpec, timed: int) -> float:
    from ablab.train.build import build_run

    run = build_run(spec)
    train = run.data.splits["train"]
    index = torch.arange(min(spec.batch_size, len(train)), device=run.device)
    x, y = train.rows(index)
    x = run.layout(x)
    run.model.train()
    for i in range(WARMUP_STEPS + timed):
        if i == WARMUP_STEPS:
            _sync(run.device)
            start = time.perf_counter()
        run.objective.step(run.model, run.forward, run.optimizer, x, y)
    _sync(run.device)
    return (time.perf_counter() - start) / timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
