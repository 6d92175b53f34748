"""Local executor: runs in this process (workers=1) or in N worker processes.

Workers only train and return a ``RunResult``; the driver alone writes the store.

Worker processes start warm. On Linux with 1 intra-op thread per run, they are forked from the
driver after it has imported torch._dynamo (torch imports it on the first optimizer, ~1 s) and
validated the study (which read its dataset files into the loaders' cache), so no worker repeats
either. Forking is unsafe once the driver has started threads a child cannot have: OpenMP's (with
more threads per run a forked child hangs: GNU libgomp is not fork-safe once the parent has used a
thread team), a CUDA context, or autograd's device threads (the first backward on a machine with a
GPU starts one per device, even for CPU tensors; a forked child then fails in its first backward).
Then workers come from a ``forkserver`` that preloads the same modules; where neither exists
(Windows), they are spawned.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ablab.errors import AblabError, StoreIOError
from ablab.execute.progress import ProgressView
from ablab.execute.schedule import WorkerDied, finish_run, note_for, run_all, start_run  # noqa: F401  (re-exported)
from ablab.plugins import add_search_path, search_path
from ablab.spec import Variant, parse_unit
from ablab.store import Store, close_inherited_locks
from ablab.train.compute import keep_freed_memory
from ablab.train.inputs import UnitFiles
from ablab.train.packed import train_pack
from ablab.train.posthoc import run_unit
from ablab.train.result import RunResult

MAX_WORKER_CRASHES = 2  # a run whose worker died this often is stored as failed
STARTED = -1  # in place of an epoch on the progress queue: the run started in the process whose pid follows

_progress_queue: Any = None
# what a worker imports before its first run; ``torch._dynamo`` is torch's lazy import on the first optimizer
WARM_MODULES = ["ablab.execute.local", "ablab.components", "torch._dynamo"]
# autograd's engine names its per-device worker threads "pt_autograd_<device index>"
# (torch/csrc/autograd/engine.cpp, Engine::thread_init); a child forked after they start has none
AUTOGRAD_DEVICE_THREAD = "pt_autograd_"


def start_method(threads: int) -> str:
    """How worker processes start: ``fork`` (warm) while that is safe, else ``forkserver``, else ``spawn``."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and sys.platform.startswith("linux") and threads == 1 and _fork_safe():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _fork_safe() -> bool:
    """Neither CUDA nor autograd's device threads have started in this process (unknown: unsafe)."""
    if torch.cuda.is_initialized():
        return False
    names = thread_names()
    return names is not None and not any(n.startswith(AUTOGRAD_DEVICE_THREAD) for n in names)


def thread_names() -> list[str] | None:
    """The OS names of this process's threads (Linux /proc), or None where they cannot be read."""
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return None
    names = []
    for task in tasks:
        try:
            names.append((task / "comm").read_text().strip())
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        except OSError:
            return None
    return names


def warm_driver() -> None:
    """First-use imports done once in the driver, for forked workers to inherit. (The data needs
    nothing here: validating the study has read every dataset file into the loaders' per-process
    cache, which the forks share.)"""
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)


def _die_with_driver() -> None:
    """A worker ends when the driver ends, however it ends (kill -9, OOM), so no worker outlives a study.

    Linux: the kernel sends SIGKILL when the worker's parent exits (``PR_SET_PDEATHSIG``). The parent
    is the driver for forked workers but the forkserver otherwise, which lives as long as any worker
    holds its "alive" pipe, so a thread also watches the driver itself: the pipe from it that
    multiprocessing hands every child (``parent_process().sentinel``, readable once the driver's end
    closes) and, where a parent's exit re-parents this process, the parent pid."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before anything was armed
        os._exit(1)
    import threading

    driver = mp.parent_process()
    threading.Thread(target=_watch_driver, args=(driver.sentinel if driver else None, parent),
                     name="ablab-driver-watch", daemon=True).start()


def _watch_driver(sentinel: int | None, parent: int, poll_s: float = 1.0) -> None:
    """Kill this process once the driver's pipe ``sentinel`` closes or its parent is no longer ``parent``."""
    from multiprocessing.connection import wait as wait_ready

    while os.getppid() == parent:
        if sentinel is not None and wait_ready([sentinel], timeout=poll_s):
            break
        if sentinel is None:
            time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGKILL)


def _init_worker(progress_queue: Any, threads: int, folders: list[str]) -> None:
    global _progress_queue
    _die_with_driver()
    add_search_path(*folders)  # a spawned worker finds the study's own modules where the driver did
    _progress_queue = progress_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    close_inherited_locks()  # a forked worker must not keep the study's lock alive after the driver
    torch.set_num_threads(threads)
    keep_freed_memory()  # (a forkserver or spawned worker does not inherit the driver's setting)


def _run_in_worker(spec_json: str, run_id: str, staging: str, files: UnitFiles | None = None) -> RunResult:
    def progress(epoch: int, epochs: int) -> None:
        if _progress_queue is not None:
            _progress_queue.put((run_id, epoch, epochs))

    if _progress_queue is not None:  # which process runs which run: a death is charged to its run only
        _progress_queue.put((run_id, STARTED, os.getpid()))

    return run_unit(parse_unit(spec_json), progress=progress, run_id=run_id, staging=Path(staging), files=files)


def _run_pack_in_worker(specs_json: list[str], run_ids: list[str], staging: list[str],
                        files: list[UnitFiles]) -> list[RunResult]:
    def progress_of(run_id: str):
        def progress(epoch: int, epochs: int) -> None:
            if _progress_queue is not None:
                _progress_queue.put((run_id, epoch, epochs))
        return progress

    if _progress_queue is not None:
        for run_id in run_ids:
            _progress_queue.put((run_id, STARTED, os.getpid()))
    return train_pack([parse_unit(s) for s in specs_json], run_ids, [Path(s) for s in staging], files,
                      [progress_of(r) for r in run_ids])


def run_sequential(store: Store, todo: list[Variant | list[Variant]], view: ProgressView, threads: int) -> None:
    """Train each run (or pack of runs) in this process, storing each result as it arrives."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_all(store, todo, view, _InProcess(store, view), workers=1)
    finally:
        torch.set_num_threads(old_threads)


class _InProcess:
    """Backend that runs each unit in the driver's process when it is submitted."""

    def __init__(self, store: Store, view: ProgressView):
        self.store, self.view = store, view
        self.results: dict[int, RunResult] = {}
        self.count = 0

    def submit(self, v: Variant, files: UnitFiles) -> int:
        self.count += 1
        self.results[self.count] = run_unit(v.spec, progress=lambda e, n, rid=v.id: self.view.epoch(rid, e, n),
                                            run_id=v.id, staging=self.store.staging_dir(v.id), files=files)
        return self.count

    def submit_pack(self, vs: list[Variant], files: list[UnitFiles]) -> int:
        self.count += 1
        self.results[self.count] = train_pack(
            [v.spec for v in vs], [v.id for v in vs], [self.store.staging_dir(v.id) for v in vs], files,
            [lambda e, n, rid=v.id: self.view.epoch(rid, e, n) for v in vs])
        return self.count

    def wait(self, handles: list, timeout: float) -> list:
        return list(handles)

    def result(self, handle: int) -> RunResult | list[RunResult]:
        return self.results.pop(handle)

    def drain_progress(self, view: ProgressView) -> None:
        pass

    def recover(self) -> None:
        pass


def run_parallel(store: Store, todo: list[Variant | list[Variant]], view: ProgressView, workers: int,
                 threads: int) -> None:
    """Train runs in ``workers`` processes; a dead worker's runs are retried, then failed."""
    method = start_method(threads)
    ctx = mp.get_context(method)
    if method == "fork":
        warm_driver()
    elif method == "forkserver":
        ctx.set_forkserver_preload(WARM_MODULES)
        _start_forkserver(store)
    backend = _Pool(ctx, workers, threads, store)
    try:
        run_all(store, todo, view, backend, workers, max_crashes=MAX_WORKER_CRASHES)
    except (KeyboardInterrupt, StoreIOError):  # run_study marks the runs in flight pending
        backend.terminate()
        raise
    finally:
        backend.close()


def _start_forkserver(store: Store) -> None:
    """Start the forkserver and note its temporary folder (multiprocessing's ``pymp-*``, holding the
    server's socket) with the study: multiprocessing removes it at the driver's exit, and where the
    driver is killed before that, the next invocation in the results directory does."""
    import tempfile
    from multiprocessing import forkserver, util

    try:
        forkserver.ensure_running()
    except OSError as err:  # its socket lies in a pymp-* folder under TMPDIR: 107 bytes at most on Linux
        if "AF_UNIX path too long" not in str(err):
            raise
        raise AblabError(f"the temporary folder {tempfile.gettempdir()} is too deep for the socket of the workers' "
                         "forkserver (a socket path holds at most 107 bytes): set TMPDIR to a shorter folder, or run "
                         "with --threads 1 (forked workers need no socket)") from None
    store.note_temp_dir(util.get_temp_dir())


def _stop_pool(pool: ProcessPoolExecutor, join_s: float = 60.0) -> None:
    """Shut a pool down without waiting for its runs, but wait for its manager thread to end.

    ``shutdown(wait=False)`` forgets the manager thread while it is still closing the pool's wake-up
    pipe; if the interpreter exits meanwhile, its exit hook wakes that pipe unlocked and can write to
    the closed descriptor (``OSError: Bad file descriptor`` printed as a traceback after the driver's
    own message; CPython 3.11). Its workers are stopped or dead, so the thread ends promptly; the bound
    is only for one that does not."""
    thread = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    if thread is not None and thread is not threading.current_thread():
        thread.join(join_s)


@dataclass
class _PoolLife:
    """One process pool's workers (pid -> Process, as last seen) and, once it broke, whose death broke it."""

    processes: dict[int, Any] = field(default_factory=dict)
    culprits: set[int] | None = None


def _culprits(processes: dict[int, Any], timeout_s: float = 120.0) -> set[int]:
    """Pids of the workers that ended other than by the SIGTERM a broken pool sends the rest.

    Every worker of a broken pool ends (the pool stops the others at once), so this waits for all their
    exit codes; the bound is only for a worker that never ends. (It was 5 s: on a loaded machine no exit
    code was known by then, no culprit was found, and every run in flight was charged.)"""
    deadline = time.monotonic() + timeout_s
    codes = {pid: p.exitcode for pid, p in processes.items()}
    while any(c is None for c in codes.values()) and time.monotonic() < deadline:
        time.sleep(0.02)  # the pool's manager thread is still stopping (and reaping) the others
        codes = {pid: p.exitcode for pid, p in processes.items()}
    return {pid for pid, code in codes.items() if code is not None and code != -signal.SIGTERM}


class _Pool:
    """Backend over a process pool; a broken pool (a worker died) is replaced by a new one.

    When one worker dies the pool stops all the others (SIGTERM) and fails every future. Each
    worker reports the run it starts with its pid, so only the run of a worker that ended
    otherwise (SIGKILL, OOM, exit) is charged; the others run again uncharged. When no worker
    ended otherwise (one was sent SIGTERM from outside) every run in flight is charged."""

    def __init__(self, ctx: Any, workers: int, threads: int, store: Store):
        self.ctx, self.workers, self.threads, self.store = ctx, workers, threads, store
        self.progress_queue = ctx.Queue()
        self.pool = self._new_pool()
        self.run_of: dict[Future, tuple[str, _PoolLife]] = {}  # a future's run, and the pool it went to
        self.pid_of: dict[str, int] = {}  # run id -> pid of the worker that reported starting it
        self.life = _PoolLife()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=self.ctx, initializer=_init_worker,
                                   initargs=(self.progress_queue, self.threads, search_path()))

    def submit(self, v: Variant, files: UnitFiles) -> Future:
        args = (_run_in_worker, v.spec.canonical_json(), v.id, str(self.store.staging_dir(v.id)), files)
        self.pid_of.pop(v.id, None)
        try:
            future = self.pool.submit(*args)
        except BrokenProcessPool:  # the pool broke after the last wait: a new one takes the run
            self.recover()
            future = self.pool.submit(*args)
        self.run_of[future] = (v.id, self.life)
        self._see_processes()
        return future

    def submit_pack(self, vs: list[Variant], files: list[UnitFiles]) -> Future:
        args = (_run_pack_in_worker, [v.spec.canonical_json() for v in vs], [v.id for v in vs],
                [str(self.store.staging_dir(v.id)) for v in vs], files)
        for v in vs:
            self.pid_of.pop(v.id, None)
        try:
            future = self.pool.submit(*args)
        except BrokenProcessPool:
            self.recover()
            future = self.pool.submit(*args)
        self.run_of[future] = (vs[0].id, self.life)  # every run of a pack is in the one worker: the first stands for all
        self._see_processes()
        return future

    def _see_processes(self) -> None:
        """Remember the pool's processes: a broken pool forgets them, and their exit codes tell who died."""
        self.life.processes.update(getattr(self.pool, "_processes", None) or {})

    def wait(self, handles: list, timeout: float) -> list:
        self._see_processes()
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Future) -> RunResult | list[RunResult]:
        run_id, life = self.run_of.pop(handle, (None, self.life))
        try:
            result = handle.result()
            self.pid_of.pop(run_id, None)  # that worker's pid now stands for its next run only
            return result
        except BrokenProcessPool as err:
            charged = self._charged(run_id, life)
            why = "a worker process exited unexpectedly" if charged else "another worker process died"
            raise WorkerDied(why, charged=charged) from err

    def _charged(self, run_id: str | None, life: "_PoolLife") -> bool:
        """Whether the run's own worker died (True also where that cannot be told)."""
        if life.culprits is None:
            life.culprits = _culprits(life.processes)
        self._read_queue(None)  # start reports still in the queue
        if not life.culprits:
            return True
        pid = self.pid_of.get(run_id) if run_id else None
        if pid is not None:
            return pid in life.culprits
        # not reported as started: charged only if a culprit's run is unknown (its report may be lost)
        return bool(life.culprits - set(self.pid_of.values()))

    def drain_progress(self, view: ProgressView) -> None:
        self._read_queue(view)

    def _read_queue(self, view: ProgressView | None) -> None:
        while True:
            try:
                run_id, epoch, value = self.progress_queue.get_nowait()
            except (queue_mod.Empty, OSError, ValueError):
                return
            if epoch == STARTED:
                self.pid_of[run_id] = value
            elif view is not None:
                view.epoch(run_id, epoch, value)

    def recover(self) -> None:
        _stop_pool(self.pool)
        self.pool = self._new_pool()
        self.life = _PoolLife()  # futures of the broken pool keep theirs: they may fail after this
        self._see_processes()

    def terminate(self) -> None:
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            proc.terminate()
        _stop_pool(self.pool)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.progress_queue.close()
