"""Runs that hold mid-training until a test opens their gate: process tests that need a run in flight
(a worker to kill, a driver to stop) get one whatever the machine's speed, with no sleep.

``install(folder)`` writes the module ``gated_mlp`` (a study's ``imports: [gated_mlp]`` loads it in the
driver and every worker, forked, forkserver or spawned). Its model ``gated_mlp`` is ``mlp`` with one
hidden layer; with ``gate: PATH`` its first training step (or its N-th, N read from the file
``PATH.at`` when there is one: ``hold_at``) writes ``PATH.waiting-<pid>`` and waits until the file
``PATH`` exists. Without a gate it never waits.
"""

from __future__ import annotations

import time
from pathlib import Path

MODULE = "gated_mlp"

SOURCE = '''
import os
import time
from math import prod
from pathlib import Path

from torch import nn

import ablab


class Gated(nn.Module):
    """An MLP whose first training step waits until the file ``gate`` exists."""

    def __init__(self, in_features: int, width: int, out_dim: int, gate: str):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out_dim))
        self.gate = Path(gate) if gate else None
        self.steps = 0

    def forward(self, x):
        if self.training and self.gate is not None:
            at = Path(f"{self.gate}.at")
            if self.steps >= (int(at.read_text()) if at.exists() else 0):
                Path(f"{self.gate}.waiting-{os.getpid()}").touch()
                while not self.gate.exists():
                    time.sleep(0.02)
                self.gate = None
            self.steps += 1
        return self.net(x)


@ablab.register_model("gated_mlp")
def gated_mlp(in_shape, out_dim, width: int = 16, gate: str = ""):
    """``mlp`` with one hidden layer; with ``gate``, training holds until that file exists."""
    return Gated(prod(in_shape), width, out_dim, gate)
'''


def install(folder: Path) -> str:
    """Write the module into ``folder`` (a study's own folder); the name to list in its ``imports``."""
    (folder / f"{MODULE}.py").write_text(SOURCE)
    return MODULE


def waiting(gate: Path) -> list[int]:
    """Pids of the processes whose run waits at ``gate`` (or waited: the files stay)."""
    return sorted(int(p.name.rsplit("-", 1)[1]) for p in gate.parent.glob(f"{gate.name}.waiting-*"))


def wait_for_waiting(gate: Path, n: int, proc=None, timeout_s: float = 300, stop=None) -> list[int]:
    """Poll until ``n`` runs wait at ``gate``; fails if the child ``proc`` exits first or at ``timeout_s``.
    With ``stop`` (a ``threading.Event``), returns the pids waiting so far once it is set."""
    deadline = time.monotonic() + timeout_s
    while len(waiting(gate)) < n and not (stop is not None and stop.is_set()):
        assert proc is None or proc.poll() is None, proc.communicate() if proc.stdout else proc.returncode
        assert time.monotonic() < deadline, f"{len(waiting(gate))} of {n} runs reached the gate {gate}"
        time.sleep(0.05)
    return waiting(gate)


def close_gate(gate: Path, at: int = 0) -> None:
    """Runs started from now hold at their ``at``-th training step (0: the first) until ``open_gate``;
    the waiting files of earlier holds are removed."""
    gate.unlink(missing_ok=True)
    for old in gate.parent.glob(f"{gate.name}.waiting-*"):
        old.unlink()
    Path(f"{gate}.at").write_text(str(at))


def open_gate(gate: Path) -> None:
    """Let every run waiting at ``gate`` (and every later one) go on."""
    gate.touch()
