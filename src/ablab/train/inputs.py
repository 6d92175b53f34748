"""The stored files a unit reads, resolved by the driver and handed to its worker.

A worker never opens the store: before it submits a unit, the driver looks up the checkpoints the
unit reads (the one an ``init_from`` run continues, the members of a post-hoc unit) and hands in
each as a path with its recorded sha256 (local workers share the study's file system) or as its
bytes (Ray, whose workers may run on another node). The worker checks the digest as it reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ablab.artifacts import load_checkpoint


@dataclass(frozen=True)
class StoredFile:
    """One stored artifact file: where it is (``path``) or its bytes (``data``), and its recorded sha256."""

    sha256: str
    path: Optional[str] = None
    data: Optional[bytes] = None

    def read(self) -> bytes:
        """The file's bytes, checked against the recorded digest (ValueError when damaged or unreadable)."""
        try:
            data = self.data if self.data is not None else Path(self.path).read_bytes()
        except OSError as err:
            raise ValueError(f"{self.path}: cannot read the stored file: {err.strerror}") from None
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ValueError(f"{self.path or 'a stored file'}: the file does not match its recorded sha256 "
                             "(damaged or replaced)")
        return data

    def in_memory(self) -> "StoredFile":
        """The same file with its bytes inside (for a worker that may not see the driver's disk); the worker
        checks them as it reads. A file the driver cannot read stays a path: the worker's read says why."""
        try:
            return StoredFile(self.sha256, self.path, Path(self.path).read_bytes())
        except OSError:
            return self


@dataclass
class UnitFiles:
    """The checkpoints a unit reads, by (run id, epoch)."""

    checkpoints: dict[tuple[str, int], StoredFile] = field(default_factory=dict)

    def checkpoint(self, run: str, epoch: int) -> dict[str, Any]:
        """The checkpoint of ``run`` at ``epoch`` (``checkpoint.load``'s dict)."""
        file = self.checkpoints.get((run, epoch))
        if file is None:
            raise ValueError(f"the checkpoint of run {run} at epoch {epoch} was not handed to this unit "
                             "(the driver resolves the files a unit reads: run it with ablab run)")
        return load_checkpoint(file.read())

    def in_memory(self) -> "UnitFiles":
        return UnitFiles({key: f.in_memory() for key, f in self.checkpoints.items()})
