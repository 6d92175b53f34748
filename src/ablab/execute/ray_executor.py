"""Ray executor: each run is a Ray task; workers return results and the driver alone writes the store.

Without an address it starts a private local Ray instance (dashboard off; nothing of it outlives
the driver: ``ray_reaper``); with one it joins an existing cluster (``ray start --head`` on the head
node, ``ray start --address=HEAD:6379`` on the others). The same spec gives the same numbers as the local executor for the same threads per run.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from ablab.errors import AblabError, StoreIOError
from ablab.execute import ray_reaper
from ablab.execute.progress import ProgressView
from ablab.execute.schedule import run_all
from ablab.plugins import search_path
from ablab.spec import Resources, Variant
from ablab.store import Store
from ablab.train.inputs import UnitFiles
from ablab.train.result import RunResult, StagingWriteError

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "the Ray executor needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')"


def import_ray() -> Any:
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AblabError(INSTALL_HINT) from None
    return ray


CONNECT_TIMEOUT_S = 10  # an unreachable head is refused within this (ray.init would retry for many minutes)


def check_reachable(address: str | None) -> None:
    """One clear error (exit 2, before anything is written) when nothing answers at a ``HOST:PORT`` Ray address.

    ``auto``, ``local`` and no address are Ray's to resolve. Only the TCP port is tried: a head that
    answers there but is no Ray GCS is still ``ray.init``'s to report."""
    host, sep, port = (address or "").removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
        return
    except TimeoutError:
        why = f"no answer within {CONNECT_TIMEOUT_S} s"
    except OSError as err:
        why = err.strerror or str(err)
    raise AblabError(f"Ray address {address}: no Ray head answers there ({why}); start the cluster with 'ray start "
                     "--head' on its head node or correct --address (or RAY_ADDRESS); without an address ablab "
                     "starts a private Ray instance on this machine")


def _train_task(spec_json: str, run_id: str, threads: int, staging: str | None = None,
                files: UnitFiles | None = None, search_path: tuple[str, ...] = ()) -> RunResult | StagingWriteError:
    """Runs on a Ray worker: the same code path as a local worker process. On another node without
    the study folder, artifacts travel back in the result; the stored files the unit reads come in
    ``files`` as bytes (read and checked by the driver); the study's own modules must be importable
    there too (installed, or the spec's folder on a shared file system)."""
    import torch

    from ablab.plugins import add_search_path
    from ablab.train.compute import keep_freed_memory
    from ablab.spec import parse_unit
    from ablab.train.posthoc import run_unit

    torch.set_num_threads(threads)
    keep_freed_memory()
    add_search_path(*(p for p in search_path if os.path.isdir(p)))
    try:
        return run_unit(parse_unit(spec_json), run_id=run_id, staging=Path(staging) if staging else None, files=files)
    except StagingWriteError as err:  # returned, not raised: the driver raises it (exit 74, the run still to do)
        return err


def run_ray(
    store: Store,
    todo: list[Variant],
    view: ProgressView,
    *,
    workers: int,
    threads: int,
    resources: Resources,
    address: str | None = None,
    max_retries: int = 2,
) -> None:
    """Train ``todo`` as Ray tasks, at most ``workers`` in flight; a task whose worker died
    ``max_retries`` + 1 times is stored as failed with the reason."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # a running instance saves ~5 s of start-up
    started_here = not ray.is_initialized()
    sigterm = signal.getsignal(signal.SIGTERM)
    reaper = None
    if started_here:
        common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **common)
        else:
            before = _child_pids()
            with _loopback_node(ray):  # a private instance, reachable from this machine only
                ray.init(
                    address="local", num_cpus=workers * max(1, math.ceil(resources.cpus)),
                    num_gpus=_local_gpus() if resources.gpus > 0 else 0, _node_ip_address=LOOPBACK, **common,
                )
            reaper = _start_reaper(_child_pids() - before)
    if started_here and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)  # ray.init replaces it; SIGTERM stops a study like Ctrl-C
    remote = ray.remote(_train_task).options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=max_retries, retry_exceptions=False
    )
    backend = _RayTasks(ray, remote, store, threads, max_retries)
    try:
        run_all(store, todo, view, backend, workers)
    except (KeyboardInterrupt, StoreIOError):  # run_study marks the runs in flight pending
        if not started_here:
            # Ray belongs to the caller: stop our tasks. (Where we started Ray, shutdown kills them;
            # ray.cancel(force=True) racing a task's completion aborts the driver in Ray 2.60.)
            for ref in backend.submitted:
                ray.cancel(ref)
        raise
    finally:
        if started_here:
            ray.shutdown()
        _stop_reaper(reaper)


class _RayTasks:
    """Backend over Ray tasks; Ray itself retries a task whose worker died."""

    def __init__(self, ray: Any, remote: Any, store: Store, threads: int, max_retries: int):
        self.ray, self.remote, self.store, self.threads, self.max_retries = ray, remote, store, threads, max_retries
        self.submitted: set = set()

    def submit(self, v: Variant, files: UnitFiles) -> Any:
        # a worker may run on another node: the files it reads travel as bytes (Ray's object store)
        ref = self.remote.remote(v.spec.canonical_json(), v.id, self.threads, str(self.store.staging_dir(v.id)),
                                 files.in_memory(), tuple(search_path()))
        self.submitted.add(ref)
        return ref

    def wait(self, handles: list, timeout: float) -> list:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=max(timeout, 0.5))
        return ready

    def result(self, ref: Any) -> RunResult:
        self.submitted.discard(ref)
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # worker died (retries used up) or task error
            return RunResult("", "failed", error=f"Ray task failed after {self.max_retries} retries: "
                             f"{type(err).__name__}: {err}")
        if isinstance(result, StagingWriteError):
            raise result
        return result

    def drain_progress(self, view: ProgressView) -> None:
        pass

    def recover(self) -> None:
        pass


@contextlib.contextmanager
def _loopback_node(ray: Any) -> Iterator[None]:
    """While Ray starts, its node address stays 127.0.0.1.

    Ray turns a loopback ``_node_ip_address`` into the machine's external address
    (``services.resolve_ip_for_localhost``) unless multi-node clusters are off, as on macOS and
    Windows (``ray_constants.ENABLE_RAY_CLUSTER``, env ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read at
    import). With the node address 127.0.0.1, GCS, raylet, core workers and the agents bind there;
    with the external one they listen on every interface and the runtime-env agent on the external
    address. Read at call time, so it is switched off for ``ray.init`` only.
    """
    try:
        constants = importlib.import_module("ray._private.ray_constants")
    except ImportError:
        constants = None
    if not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        yield  # another Ray layout: tests/execute/test_ray_isolation.py says whether it still binds to 127.0.0.1
        return
    before = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before


def _child_pids() -> set[int]:
    """This process's children (Linux /proc; empty elsewhere)."""
    return ray_reaper.children_of(os.getpid()) if Path("/proc/self/stat").exists() else set()


def _start_reaper(roots: set[int]) -> subprocess.Popen | None:
    """The process that kills what is left of the private instance (the processes ``roots`` and their
    descendants) once this driver is gone, however it ends (``execute/ray_reaper.py``); None without /proc."""
    if not roots:
        return None
    return subprocess.Popen([sys.executable, ray_reaper.__file__, *map(str, sorted(roots))], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_reaper(reaper: subprocess.Popen | None) -> None:
    """After ``ray.shutdown``: the reaper kills any straggler of the instance, then exits."""
    if reaper is None:
        return
    reaper.stdin.close()
    try:
        reaper.wait(timeout=30)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
