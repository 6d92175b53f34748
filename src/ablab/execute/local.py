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

import collections
import multiprocessing as mp
import queue as queue_mod
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from ablab.execute.progress import ProgressView
from ablab.spec import RunSpec, Variant
from ablab.store import Store
from ablab.train.loop import train
from ablab.train.result import RunResult

MAX_WORKER_CRASHES = 2  # a run in flight when a worker died this often is stored as failed

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


def _init_worker(progress_queue: Any, threads: int) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    torch.set_num_threads(threads)


def _run_in_worker(spec_json: str, run_id: str) -> RunResult:
    spec = RunSpec.model_validate_json(spec_json)

    def progress(epoch: int, epochs: int) -> None:
        if _progress_queue is not None:
            _progress_queue.put((run_id, epoch, epochs))

    return train(spec, progress=progress, run_id=run_id)


def note_for(result: RunResult) -> str:
    """One line for the log: the error's last line, or the final test metrics."""
    if result.status == "failed" and result.error:
        return result.error.strip().splitlines()[-1][:200]
    finals = {(sp, n): v for (_, _, sp, n, v) in result.metrics if sp == "test"}
    return ", ".join(f"test.{n}={v:.4g}" for (_, n), v in sorted(finals.items()))


def start_run(store: Store, view: ProgressView, v: Variant) -> None:
    """The driver's side of a run starting: status ``running`` in the store, a line in the view."""
    store.mark_running(v.id)
    view.started(v.id, v.label, v.replicate)


def finish_run(store: Store, view: ProgressView, v: Variant, result: RunResult) -> None:
    """The driver's side of a result arriving: stored (one transaction), then shown."""
    store.record(result)
    view.finished(v.id, v.label, v.replicate, result.status, result.duration_s, note_for(result))


def run_sequential(store: Store, todo: list[Variant], view: ProgressView, threads: int) -> None:
    """Train each run in this process, storing each result as it arrives."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _run_each(store, todo, view)
    finally:
        torch.set_num_threads(old_threads)


def _run_each(store: Store, todo: list[Variant], view: ProgressView) -> None:
    for v in todo:
        start_run(store, view, v)
        result = train(v.spec, progress=lambda e, n, rid=v.id: view.epoch(rid, e, n), run_id=v.id)
        finish_run(store, view, v, result)


def run_parallel(store: Store, todo: list[Variant], view: ProgressView, workers: int, threads: int) -> None:
    """Train runs in ``workers`` processes; a dead worker's runs are retried, then failed."""
    method = start_method(threads)
    ctx = mp.get_context(method)
    if method == "fork":
        warm_driver()
    elif method == "forkserver":
        ctx.set_forkserver_preload(WARM_MODULES)
    progress_queue = ctx.Queue()
    pending = collections.deque(todo)
    crashes: collections.Counter[str] = collections.Counter()
    inflight: dict[Future, Variant] = {}
    pool = _new_pool(ctx, workers, progress_queue, threads)
    try:
        while pending or inflight:
            while pending and len(inflight) < workers:
                v = pending.popleft()
                start_run(store, view, v)
                inflight[pool.submit(_run_in_worker, v.spec.canonical_json(), v.id)] = v
            done, _ = wait(list(inflight), timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, view)
            broken = False
            for fut in done:
                v = inflight.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    crashes[v.id] += 1
                    if crashes[v.id] < MAX_WORKER_CRASHES:
                        store.mark_pending([v.id])
                        pending.appendleft(v)
                        continue
                    result = RunResult(v.id, "failed", error=f"worker process died {crashes[v.id]} times while running this run")
                finish_run(store, view, v, result)
            if broken:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _new_pool(ctx, workers, progress_queue, threads)
    except KeyboardInterrupt:  # run_study marks the runs in flight pending
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()


def _new_pool(ctx: Any, workers: int, progress_queue: Any, threads: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue, threads)
    )


def _drain(progress_queue: Any, view: ProgressView) -> None:
    while True:
        try:
            run_id, epoch, epochs = progress_queue.get_nowait()
        except (queue_mod.Empty, OSError, ValueError):
            return
        view.epoch(run_id, epoch, epochs)


def _terminate(pool: ProcessPoolExecutor) -> None:
    for proc in list(getattr(pool, "_processes", {}).values()):
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
