"""What a training run returns to the driver: plain data, picklable across processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["done", "diverged", "failed"]
MetricRow = tuple[int, int, str, str, float]  # (step, epoch, split, name, value)


@dataclass
class RunResult:
    """A finished run: its status, long-format metrics and artifact files (name -> bytes)."""

    run_id: str
    status: Status
    metrics: list[MetricRow] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    device: str = ""
    duration_s: float = 0.0
    started: float = 0.0
    info: dict = field(default_factory=dict)  # duration plan (steps, gradient evaluations), parameter count
