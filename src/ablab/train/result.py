"""What a training run returns to the driver: plain data, picklable across processes.

Artifacts (checkpoints, predictions, probe series) are written by the worker into the study's
staging folder when it has one (they never travel through the result pipe) and are moved into
place by the driver; without a staging folder (``train(spec)`` called directly) they are kept in
memory. Either way ``result.artifacts[name]`` gives the bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

from ablab.files import write_atomic

Status = Literal["done", "diverged", "failed"]
MetricRow = tuple[int, int, str, str, float]  # (step, epoch, split, name, value)


@dataclass
class Artifact:
    """One artifact file: what it is, when it was made, its size and digest, and where its bytes are."""

    name: str
    kind: str  # checkpoint | predictions | probe | ...
    epoch: Optional[int] = None
    split: Optional[str] = None
    size: int = 0
    sha256: str = ""
    path: Optional[str] = None  # the staged file written by the worker
    data: Optional[bytes] = None  # in memory, when there is no staging folder

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        return Path(self.path).read_bytes()


class Artifacts(Mapping):
    """Artifacts by name; ``artifacts[name]`` is the file's bytes, ``records()`` the descriptions."""

    def __init__(self) -> None:
        self._items: dict[str, Artifact] = {}

    def __getitem__(self, name: str) -> bytes:
        return self._items[name].read()

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def records(self) -> list[Artifact]:
        return list(self._items.values())

    def add(self, artifact: Artifact) -> None:
        self._items[artifact.name] = artifact


# a write into the study's staging folder that fails with one of these failed for the disk, not the run
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})


class StagingWriteError(BaseException):
    """A staged artifact could not be written (disk full, quota, read-only): an I/O failure of the study.

    A ``BaseException`` like ``KeyboardInterrupt``: it is no error of the unit, so ``run_guarded``
    (which catches ``Exception``) lets it through, and the executor stops the study with exit 74
    and the run still to do. Picklable: it crosses from a worker process to the driver."""

    def __init__(self, path: str, code: int, strerror: str):
        super().__init__(path, code, strerror)
        self.path, self.errno, self.strerror = path, code, strerror

    def __str__(self) -> str:
        return f"{self.path}: {self.strerror}"


class ArtifactSink:
    """Where a worker puts artifact bytes: files in ``staging`` (atomic), or memory when it is None."""

    def __init__(self, staging: Optional[Path] = None):
        # a Ray worker on another node has no study folder: its artifacts travel in memory
        usable = staging is not None and Path(staging).parent.is_dir()
        self.staging = Path(staging) if usable else None
        self.artifacts = Artifacts()

    def put(self, name: str, data: bytes, kind: str, epoch: Optional[int] = None, split: Optional[str] = None) -> None:
        if "/" in name or name.startswith("."):
            raise ValueError(f"artifact names are plain file names, got {name!r}")
        record = Artifact(name, kind, epoch, split, len(data), hashlib.sha256(data).hexdigest())
        if self.staging is not None:
            path = self.staging / name
            try:
                write_atomic(path, data)
            except OSError as err:
                if err.errno not in DISK_ERRNOS:
                    raise
                raise StagingWriteError(str(path), err.errno, err.strerror or os.strerror(err.errno)) from err
            record.path = str(path)
        else:
            record.data = data
        self.artifacts.add(record)


@dataclass
class RunResult:
    """A finished run: its status, long-format metrics and artifact files."""

    run_id: str
    status: Status
    metrics: list[MetricRow] = field(default_factory=list)
    artifacts: Artifacts = field(default_factory=Artifacts)
    error: str | None = None
    device: str = ""
    duration_s: float = 0.0
    started: float = 0.0
    info: dict = field(default_factory=dict)  # duration plan (steps, gradient evaluations), parameter count
    directions: dict[str, str] = field(default_factory=dict)  # metric name -> "min" | "max" (declared)

    def __post_init__(self) -> None:
        if not isinstance(self.artifacts, Artifacts):  # a plain {name: bytes} mapping
            given, self.artifacts = self.artifacts, Artifacts()
            for name, data in given.items():
                self.artifacts.add(Artifact(name, "file", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                            data=data))


def run_guarded(run_id: str, device: str, work: Callable[[float], RunResult]) -> RunResult:
    """``work(started)``'s result, or a ``failed`` one with the traceback when it raises: the one place
    where an error in a unit (training run or post-hoc) becomes a result instead of a crash."""
    started = time.time()
    try:
        return work(started)
    except Exception:  # noqa: BLE001  (a unit that raises is a result: failed, with its traceback)
        return RunResult(run_id, "failed", error=traceback.format_exc(), device=device,
                         duration_s=time.time() - started, started=started)
