"""The driver's side of "a worker never opens the store": the stored files a unit reads, found before it starts.

A training run with ``init_from`` reads its source's checkpoint (in this study's store, or in the
results directory ``init_from.study``); a post-hoc unit reads its members' checkpoints (in
``source_study``). The driver looks each up with the store's public readers and hands the worker a
``UnitFiles`` of paths and digests; a checkpoint that is not there is an ``AblabError`` here, which
the scheduler stores as the unit's ``failed`` result.
"""

from __future__ import annotations

from ablab.artifacts import CHECKPOINT_KIND
from ablab.errors import StoreError
from ablab.spec import EvalSpec, UnitSpec
from ablab.store import Store
from ablab.train.inputs import StoredFile, UnitFiles, unreadable_reason


def checkpoints_read(spec: UnitSpec) -> dict[str | None, list[tuple[str, int]]]:
    """The checkpoints a unit reads, (run, epoch) by results directory (None: the study's own)."""
    if isinstance(spec, EvalSpec):
        return {spec.source_study: [(m.run, m.epoch) for m in spec.members]}
    src = spec.init_from
    return {src.study: [(src.run, src.epoch)]} if src is not None else {}


def resolve_files(store: Store, spec: UnitSpec) -> UnitFiles:
    """The stored files ``spec`` reads, as paths in ``store`` or in the results directory it names."""
    files = UnitFiles()
    for where, wanted in checkpoints_read(spec).items():
        source = store if where is None else Store.open(where, readonly=True)
        try:
            for run, epoch in wanted:
                files.checkpoints[(run, epoch)] = checkpoint_file(source, run, epoch)
        finally:
            if source is not store:
                source.close()
    return files


def checkpoint_file(store: Store, run: str, epoch: int) -> StoredFile:
    """Where ``run``'s checkpoint at ``epoch`` is, with its recorded sha256 (StoreError when there is none)."""
    rows = store.artifacts(run)
    rows = rows[(rows.kind == CHECKPOINT_KIND) & (rows.epoch == epoch)]
    if rows.empty:
        have = store.checkpoint_epochs(run)
        raise StoreError(f"{store.path}: run {run} has no checkpoint at epoch {epoch} (it has: {have or 'none'})")
    row = rows.iloc[0]
    path = store.artifact_path(run, row["name"])
    if reason := unreadable_reason(path):  # refused before any read: a FIFO in its place would block the worker
        raise StoreError(f"{path}: {reason} (the checkpoint of run {run} at epoch {epoch})")
    return StoredFile(str(row["sha256"]), str(path))
