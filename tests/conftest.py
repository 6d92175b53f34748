"""Shared helpers: tiny studies on the embedded digits data."""

from __future__ import annotations

import copy
import ctypes
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

# One CPU thread per run and per test unless a test asks for more (--threads 2): on a busy 2-core machine
# two OpenMP threads made a tiny study 12-18 times slower (16 s against 1 s under load 12). Set before
# torch is imported, so this process and every child it starts read it (ablab's default_threads too).
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_BASE = {
    "data": "digits",
    "model": {"name": "mlp", "widths": [16]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "epochs": 2,
    "batch_size": 128,
    "device": "cpu",
    "record": {"every_steps": 5},
}


def stored(out: Path):
    """(metrics, runs) DataFrames of the study stored in ``out``; the store is closed again."""
    from ablab.store import Store

    store = Store.open(out)
    try:
        return store.metrics(), store.runs()
    finally:
        store.close()


def same_metrics(a, b) -> bool:
    """Two stores' metric frames hold exactly the same rows (bitwise values), in any order."""
    key = ["run", "split", "name", "step"]
    return a.sort_values(key).reset_index(drop=True).equals(b.sort_values(key).reset_index(drop=True))


def status_counts(db: Path) -> dict:
    """Runs per status in a store's database, read directly (works while a driver writes it). Opened
    read-only: a plain connect made an empty ``ablab.db`` when the driver had not made the store yet,
    and the driver then refused it ("is empty (0 bytes), not an ablab store": a flaky Ray test)."""
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        rows = con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        con.close()
        return dict(rows)
    except sqlite3.Error:
        return {}


def wait_for_done(db: Path, n: int, proc, timeout: float = 120) -> None:
    """Poll until ``n`` runs are done, failing if the child ``proc`` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.exists() and status_counts(db).get("done", 0) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("runs did not finish in time")


# looked up here, in the test process: the child between fork and exec only calls it (no loader lock there)
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def interruptible() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: a shell starts background jobs
    with SIGINT ignored, and Python then never raises KeyboardInterrupt; restore the default.

    The child also gets SIGTERM when the test process ends, however it ends (a SIGKILLed pytest left
    drivers training): on Linux the kernel sends it once the thread that started the child exits, so
    start such children from the test's own thread."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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


@pytest.fixture
def own_code_sandbox(tmp_path: Path):
    """Registries, ``sys.path`` and imported modules as they were before the test: a test that imports
    a researcher's module (``imports:``, a plug-in) leaves no component and no module behind."""
    import sys

    from ablab import plugins
    from ablab.plugins import load_components
    from ablab.registry import ALL_REGISTRIES

    load_components()  # the built-ins belong to what is restored, whether or not this process used them yet
    entries = {kind: dict(reg._entries) for kind, reg in ALL_REGISTRIES.items()}
    path, search, loaded = list(sys.path), list(plugins._SEARCH_PATH), set(plugins._LOADED_ENTRY_POINTS)
    before = set(sys.modules)
    yield tmp_path
    for kind, reg in ALL_REGISTRIES.items():
        reg._entries.clear()
        reg._entries.update(entries[kind])
    sys.path[:] = path
    plugins._SEARCH_PATH[:] = search
    plugins._LOADED_ENTRY_POINTS.clear()
    plugins._LOADED_ENTRY_POINTS.update(loaded)
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file.startswith(str(tmp_path)) or "examples" in Path(file).parts:
            del sys.modules[name]


def run_refused(write_study, study: dict, tmp_path: Path, capsys, *extra: str) -> tuple[str, str]:
    """``ablab run`` on a bad study: exit 2, one ``error:`` line and no traceback, nothing written.

    Returns the message and the spec's path."""
    from ablab.cli import main

    path = write_study(study)
    out = tmp_path / "results"
    code = main(["run", str(path), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not out.exists(), "bad input must write nothing"
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err, str(path)


@pytest.fixture
def short_tmp():
    """A temporary folder with a short path, for a child's TMPDIR: the forkserver's AF_UNIX socket lies below
    it (at most 107 bytes on Linux; pytest's own folders under pytest-xdist, or a user's deep TMPDIR, pass that)."""
    with tempfile.TemporaryDirectory(prefix="t", dir="/tmp" if Path("/tmp").is_dir() else None) as tmp:
        yield Path(tmp)
