"""The one scheduling loop of every executor: what to start, when, and what to do with each result.

A backend (local processes, Ray) only starts a unit and says when units finish; this loop keeps
at most ``workers`` in flight, starts a unit that continues a run of the same study only once
that run is stored, hands each unit the stored files it reads (``execute.files``; a worker never
opens the store), charges a worker's death to the run it was running (to every run in flight
where the backend cannot tell which), and has the driver store each result as it arrives. A
worker that cannot write its staged artifacts (disk full) stops the study as an I/O failure
(``StoreIOError``, exit 74), after the results that came back with it are stored.
"""

from __future__ import annotations

import collections
from typing import Any, Hashable, Iterable, Optional, Protocol

from ablab.errors import AblabError, StoreIOError
from ablab.execute.files import resolve_files
from ablab.execute.progress import ProgressView
from ablab.spec import Variant
from ablab.store import FINAL, Store
from ablab.store.errors import io_error
from ablab.train.inputs import UnitFiles
from ablab.train.result import RunResult, StagingWriteError


class WorkerDied(Exception):
    """The process running a unit died (killed, out of memory) before returning a result.

    ``charged``: the unit's own worker died, or the backend cannot tell; False when another
    worker's death took this one down (a broken pool stops every worker) or it had not started."""

    def __init__(self, message: str, charged: bool = True):
        super().__init__(message)
        self.charged = charged


class Backend(Protocol):
    def submit(self, v: Variant, files: UnitFiles) -> Hashable:
        """Start unit ``v``, which reads the stored ``files`` the driver resolved."""

    def submit_pack(self, vs: list[Variant], files: list[UnitFiles]) -> Hashable:
        """Start the runs ``vs`` packed in one worker (``execute.packing``); its result is one per run.
        Only backends that pack have it: a plan for the others has no packs."""

    def wait(self, handles: list[Hashable], timeout: float) -> list[Hashable]: ...

    def result(self, handle: Hashable) -> RunResult:
        """The unit's result; raises ``WorkerDied`` when its worker died, ``StagingWriteError`` when
        its worker could not write its artifacts."""

    def drain_progress(self, view: ProgressView) -> None: ...

    def recover(self) -> None:
        """Called after a worker died: make the backend usable again (a new process pool)."""


def note_for(result: RunResult) -> str:
    """One line for the log: the error's last line, or the final test metrics."""
    if result.status == "failed" and result.error:
        return result.error.strip().splitlines()[-1][:200]
    finals = {(sp, n): v for (_, _, sp, n, v) in result.metrics if sp == "test"}
    return ", ".join(f"test.{n}={v:.4g}" for (_, n), v in sorted(finals.items()))


def start_run(store: Store, view: ProgressView, v: Variant) -> None:
    """The driver's side of a run starting: status ``running`` in the store, a line in the view."""
    store.mark_running(v.id)
    view.started(v.id, v.label, v.replicate, getattr(v.spec, "epochs", None) or 0)


def finish_run(store: Store, view: ProgressView, v: Variant, result: RunResult) -> None:
    """The driver's side of a result arriving: stored (one transaction), then shown."""
    store.record(result)
    view.finished(v.id, v.label, v.replicate, result.status, result.duration_s, note_for(result))


def in_study_source(v: Variant) -> Optional[str]:
    """The id of the run of this study that ``v`` continues, if any."""
    init = getattr(v.spec, "init_from", None)
    return init.run if init is not None and init.study is None else None


def run_all(store: Store, todo: Iterable[Variant | list[Variant]], view: ProgressView, backend: Backend, workers: int,
            max_crashes: int = 2, poll_s: float = 0.2) -> None:
    """Run every unit of ``todo`` (a run, or a list of runs trained packed) through ``backend``; results are
    stored as they arrive.

    Raises ``StoreIOError`` when a worker could not write its artifacts (the disk's failure: the
    caller puts the runs in flight back to pending, uncharged)."""
    units = collections.deque(u if isinstance(u, list) else [u] for u in todo)
    try:
        _schedule(store, units, view, backend, workers, max_crashes, poll_s)
    except StagingWriteError as err:
        raise disk_failure(err) from None


def disk_failure(err: StagingWriteError) -> StoreIOError:
    """The study's one I/O message for a worker's failed artifact write: the path and what to do."""
    return io_error(err.path, OSError(err.errno, err.strerror))


def _schedule(store: Store, pending: collections.deque, view: ProgressView, backend: Backend, workers: int,
              max_crashes: int, poll_s: float) -> None:
    """``run_all``'s loop over units; a ``StagingWriteError`` is raised once the other results of its batch are stored."""
    inflight: dict[Any, list[Variant]] = {}
    crashes: collections.Counter[str] = collections.Counter()
    while pending or inflight:
        _start_ready(store, view, backend, pending, inflight, workers)
        if not inflight:
            break
        done = backend.wait(list(inflight), poll_s)
        backend.drain_progress(view)
        died, disk_failed = False, None
        for handle in done:
            unit = inflight.pop(handle)
            try:
                got = backend.result(handle)
            except StagingWriteError as err:
                disk_failed = disk_failed or err
                continue
            except WorkerDied as err:
                died = True
                if not err.charged:  # another worker died: run it again, as if it had not started
                    store.mark_pending([v.id for v in unit], uncount=True)
                    pending.appendleft(unit)
                    continue
                crashes[unit[0].id] += 1
                if crashes[unit[0].id] < max_crashes:
                    store.mark_pending([v.id for v in unit])
                    pending.appendleft(unit)
                    continue
                got = [RunResult(v.id, "failed", error=f"worker process died {crashes[unit[0].id]} times while "
                                 f"running this run ({err})") for v in unit]
            for v, result in zip(unit, got if isinstance(got, list) else [got]):
                result.run_id = v.id
                finish_run(store, view, v, result)
        if disk_failed is not None:
            raise disk_failed
        if died:
            backend.recover()


def _start_ready(store: Store, view: ProgressView, backend: Backend, pending: collections.deque,
                 inflight: dict, workers: int) -> None:
    """Start pending units whose source (if in this study) is stored, up to ``workers`` in flight. The runs of
    a pack continue the same source (their specs differ only in seeds)."""
    waiting = collections.deque()
    inflight_ids = {v.id for unit in inflight.values() for v in unit}
    pending_ids = {v.id for unit in pending for v in unit}
    while pending and len(inflight) < workers:
        unit = pending.popleft()
        source = in_study_source(unit[0])
        status = store.run_status(source) if source else None
        if source and status not in FINAL:
            if source in inflight_ids or source in pending_ids or status == "running":
                waiting.append(unit)
                continue
            status = status or "missing"
        if source and status != "done":
            for v in unit:
                _fail_at_start(store, view, v, f"its source run {source} ended '{status}': there is no checkpoint "
                               "to continue from")
            continue
        ready, files = _resolved(store, view, unit)
        if not ready:
            continue
        for v in ready:
            start_run(store, view, v)
        if len(ready) > 1:
            view.packed([v.id for v in ready])
        handle = backend.submit(ready[0], files[0]) if len(ready) == 1 else backend.submit_pack(ready, files)
        inflight[handle] = ready
        inflight_ids.update(v.id for v in ready)
    pending.extendleft(reversed(waiting))


def _resolved(store: Store, view: ProgressView, unit: list[Variant]) -> tuple[list[Variant], list[UnitFiles]]:
    """The unit's runs whose stored files are there, with those files; each other run is stored ``failed``."""
    ready, files = [], []
    for v in unit:
        try:
            files.append(resolve_files(store, v.spec))
            ready.append(v)
        except AblabError as err:
            _fail_at_start(store, view, v, f"a stored file it reads is missing or unreadable: {err}")
    return ready, files


def _fail_at_start(store: Store, view: ProgressView, v: Variant, error: str) -> None:
    """A unit that cannot start (what it reads is not stored) is stored as ``failed`` with the reason."""
    start_run(store, view, v)
    finish_run(store, view, v, RunResult(v.id, "failed", error=error))
