"""Shared helpers: tiny studies on the embedded digits data."""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import pytest
import yaml

TINY_BASE = {
    "data": "digits",
    "model": {"name": "mlp", "widths": [16]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "epochs": 2,
    "batch_size": 128,
    "device": "cpu",
    "record": {"every_steps": 5},
}


def interruptible() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: a shell starts background jobs
    with SIGINT ignored, and Python then never raises KeyboardInterrupt; restore the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tiny_study(**overrides) -> dict:
    """A small valid study as a dict; keyword arguments replace top-level keys."""
    study = {"name": "tiny", "base": copy.deepcopy(TINY_BASE), "seeds": {"replicates": 2}}
    study.update(copy.deepcopy(overrides))
    return study


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study dict (or raw text) to a YAML file and return its path."""

    def write(study: dict | str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(study if isinstance(study, str) else yaml.safe_dump(study))
        return path

    return write
