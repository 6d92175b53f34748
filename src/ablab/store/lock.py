"""One writer per results directory: an exclusive ``flock`` that dies with the process holding it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ablab.errors import StoreError
from ablab.store.errors import failing_as_io
from ablab.store.layout import require_directory

LOCK_NAME = ".ablab-run.lock"
_HELD_LOCKS: set[int] = set()  # lock file descriptors of this process (a forked worker closes its copies)


def close_inherited_locks() -> None:
    """In a forked worker: close the driver's lock descriptors, so the lock dies with the driver alone."""
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


class StudyLock:
    """One writer per results directory: an exclusive ``flock`` on ``DIR/.ablab-run.lock``.

    The lock file names the holder (pid and host); the operating system releases the lock when the
    holder dies, however it dies, so a stale lock never blocks a new run. ``status`` and ``report``
    do not take it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "StudyLock":
        import fcntl  # Unix only, and only the writer needs it: readers of a store import this module too

        require_directory(self.path.parent)
        with failing_as_io(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(f"{self.path.parent}: another 'ablab run' is writing this study ({holder}); "
                             "wait for it to finish or stop it, then run again") from None
        try:
            with failing_as_io(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except StoreError:
            os.close(fd)
            raise
        self._fd = fd
        _HELD_LOCKS.add(fd)
        return self

    def release(self) -> None:
        if self._fd is not None:
            _HELD_LOCKS.discard(self._fd)
            os.close(self._fd)  # closing releases the lock; the file stays, empty of meaning
            self._fd = None

    def __enter__(self) -> "StudyLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
