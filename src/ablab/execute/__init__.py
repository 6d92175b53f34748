"""Executors: run what the store does not hold yet, and store each result as it comes back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ablab.errors import AblabError, StoreIOError
from ablab.execute.packing import plan_packs
from ablab.execute.progress import ProgressView
from ablab.spec import Study, Variant
from ablab.store import DB_NAME, Store, StudyLock, remove_stale_temp_files, require_results_path


@dataclass
class Summary:
    """Counts by status over the whole study after an invocation."""

    counts: dict[str, int]
    ran: int

    @property
    def complete(self) -> bool:
        """Every run has a final result (done or diverged); a failed run is not complete."""
        return set(self.counts) <= {"done", "diverged"}


def default_threads(workers: int) -> int:
    """CPU threads per run where ``--threads`` is not given: the cores // ``workers``, where a positive
    ``OMP_NUM_THREADS`` (the variable PyTorch and OpenMP read) stands for the cores."""
    try:
        cores = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        cores = 0
    return max(1, (cores if cores > 0 else os.cpu_count() or 1) // workers)


def run_study(
    study: Study,
    file: str,
    variants: list[Variant],
    out: str | Path,
    workers: int = 1,
    executor: Literal["local", "ray"] = "local",
    tty: bool | None = None,
    threads: int | None = None,
    address: str | None = None,
    max_retries: int = 2,
    replace: bool = False,
) -> Summary:
    """Record the study in ``out``, then train every run without a final result.

    ``threads``: intra-op CPU threads per run (default: ``default_threads(workers)``). CPU results are
    bitwise reproducible for the same thread count; a different count may change the last bits.
    A results directory holds one study: a spec of another study name is refused unless ``replace``
    (the same name with other settings, seeds or variants is that study, extended or edited).
    """
    threads = threads or default_threads(workers)
    if executor == "ray":
        from ablab.execute.ray_executor import check_reachable

        check_reachable(address or os.environ.get("RAY_ADDRESS"))  # refused before anything is written
    require_results_path(Path(out))  # refused before the lock file is written
    with StudyLock(out):  # one writer per results directory
        if not replace:
            check_same_study(out, study.name)
        return _run_locked(study, file, variants, out, workers, executor, tty, threads, address, max_retries)


def check_same_study(out: str | Path, name: str) -> None:
    """One clear error when ``out`` holds a study of another name (nothing is written)."""
    if not (Path(out) / DB_NAME).is_file() or (Path(out) / DB_NAME).stat().st_size == 0:
        return
    store = Store.open(out, readonly=True)
    try:
        names = store.study_names()
        n_runs = sum(store.status_counts().values()) if names else 0
    finally:
        store.close()
    if names and names[0] != name:
        raise AblabError(
            f"{out} holds study '{names[0]}' ({n_runs} runs), not '{name}'. To keep both, run '{name}' into "
            f"another directory (--out results/{name}); to make '{name}' the study of {out}, add --replace "
            f"('{names[0]}' and its runs stay in the store: ablab status {out} --study {names[0]})")


def _run_locked(study, file, variants, out, workers, executor, tty, threads, address, max_retries) -> Summary:
    store = Store.create(out)
    try:
        store.sync_study(study, file, variants)
        store.prepare_staging()  # leftovers of a killed invocation go before anything runs
        remove_stale_temp_files(out)
        todo_ids = set(store.run_ids_to_do())
        todo = [v for v in variants if v.id in todo_ids]
        plan = plan_packs(todo, study.execute.pack, executor, threads, workers)
        units = plan.units
        workers = min(workers, max(1, len(units)))  # a worker per unit at most: no idle processes
        view = ProgressView(total=len(variants), already_done=len(variants) - len(todo), tty=tty)
        for note in ([plan.summary()] if plan.packs else []) + plan.notes:
            view.note(note)
        try:
            if executor == "ray":
                from ablab.execute.ray_executor import run_ray

                run_ray(store, todo, view, workers=workers, threads=threads, resources=study.resources,
                        address=address, max_retries=max_retries)
            elif workers <= 1 or len(units) <= 1:
                from ablab.execute.local import run_sequential

                run_sequential(store, units, view, threads)
            else:
                from ablab.execute.local import run_parallel

                run_parallel(store, units, view, workers, threads)
        except KeyboardInterrupt:
            # every run this invocation started and did not store, even one marked running a
            # moment before the interrupt, is to do again: the next invocation resumes cleanly
            store.mark_pending(v.id for v in todo)
            raise
        except StoreIOError:
            _uncharge(store, todo)  # the disk failed, not the runs: they run again, attempts not counted
            raise
        finally:
            view.close()
            store.remove_staging()
        return Summary(store.status_counts(), len(todo))
    finally:
        store.close()


def _uncharge(store: Store, todo: list[Variant]) -> None:
    """Put the runs in flight back to pending, their last start not counted; where the disk refuses
    even that, the next invocation's ``prepare_staging`` puts them back."""
    try:
        store.mark_pending((v.id for v in todo), uncount=True)
    except StoreIOError:
        pass
