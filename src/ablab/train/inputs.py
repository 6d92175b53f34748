"""The stored files a unit reads, resolved by the driver and handed to its worker.

A worker never opens the store: before it submits a unit, the driver looks up the checkpoints the
unit reads (the one an ``init_from`` run continues, the members of a post-hoc unit) and hands in
each as a path with its recorded sha256 (local workers share the study's file system) or as its
bytes (Ray, whose workers may run on another node). The worker checks the digest as it reads.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ablab.artifacts import load_checkpoint


def unreadable_reason(path: str | Path) -> str | None:
    """Why ``path`` is no stored file to read, found without opening it (a FIFO would block), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "the stored file is missing"
    except OSError as err:
        return f"cannot read the stored file: {err.strerror}"
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        return f"is {kind}, not the stored file (it is never read)"
    return None


@dataclass(frozen=True)
class StoredFile:
    """One stored artifact file: where it is (``path``) or its bytes (``data``), and its recorded sha256."""

    sha256: str
    path: Optional[str] = None
    data: Optional[bytes] = None

    def read(self) -> bytes:
        """The file's bytes, checked against the recorded digest (ValueError when damaged or unreadable)."""
        if self.data is not None:
            self._check(hashlib.sha256(self.data))
            return self.data
        data = bytearray()
        self._check(self._digest(data.extend))
        return bytes(data)

    def verify(self) -> None:
        """Check, reading in chunks without keeping them, that the file is a regular file with the recorded
        digest (ValueError when not)."""
        if self.data is not None:
            self._check(hashlib.sha256(self.data))
        else:
            self._check(self._digest(lambda chunk: None))

    def _digest(self, keep) -> "hashlib._Hash":
        """The sha256 of the file at ``path``, read in chunks, each also handed to ``keep``."""
        if reason := unreadable_reason(self.path):
            raise ValueError(f"{self.path}: {reason}")
        h = hashlib.sha256()
        try:
            with open(self.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    keep(chunk)
        except OSError as err:
            raise ValueError(f"{self.path}: cannot read the stored file: {err.strerror}") from None
        return h

    def _check(self, digest) -> None:
        if digest.hexdigest() != self.sha256:
            raise ValueError(f"{self.path or 'a stored file'}: the file does not match its recorded sha256 "
                             "(damaged or replaced)")

    def in_memory(self) -> "StoredFile":
        """The same file with its bytes inside (for a worker that may not see the driver's disk); the worker
        checks them as it reads. A file the driver cannot read stays a path: the worker's read says why."""
        if self.data is not None or unreadable_reason(self.path):
            return self
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
        data = file.read()
        try:
            return load_checkpoint(data)
        except Exception as err:  # noqa: BLE001 - torch.load fails in many types; name the file and the reason
            raise ValueError(f"{file.path or f'the checkpoint of run {run} at epoch {epoch}'}: cannot load the "
                             f"checkpoint ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None

    def in_memory(self) -> "UnitFiles":
        return UnitFiles({key: f.in_memory() for key, f in self.checkpoints.items()})
