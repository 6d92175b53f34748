"""Disk and database failures of a results directory, as one message naming the path and what to do.

An operating-system error (``OSError``) or a SQLite failure of the file itself (full, read-only,
damaged, unopenable) becomes a ``StoreIOError`` (exit 74, EX_IOERR); a path that is not what ablab
needs (a file where a folder goes, a looping link, a name too long) a ``StoreError`` (exit 2). SQLite errors that mean a
bug in a statement (``ProgrammingError``, ``IntegrityError``) are left alone: they are not the disk's.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from pathlib import Path
from typing import Iterator

from ablab.errors import StoreError, StoreIOError

# SQLite primary result codes (https://www.sqlite.org/rescode.html)
_SQLITE_KIND = {13: "full", 8: "readonly", 3: "readonly", 11: "damaged", 26: "damaged", 10: "io", 14: "io"}
_OS_KIND = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "readonly", errno.EACCES: "readonly",
            errno.EPERM: "readonly"}
_ADVICE = {
    "full": "the disk is full; free space, then run the same command again (stored runs are kept)",
    "readonly": "cannot write here (read-only or not permitted); make it writable or choose another results "
                "directory with --out",
    "damaged": "the results database is damaged or is not an SQLite file; restore it from a copy, or move it away "
               "and run the study again (its runs are then trained again)",
    "io": "the disk failed to read or write it; check the path and the disk, then run again",
}


def is_io_failure(err: BaseException) -> bool:
    """True for failures of the file or the disk, False for errors in ablab's own statements."""
    if isinstance(err, OSError):
        return True
    return type(err) in (sqlite3.OperationalError, sqlite3.DatabaseError)


def failure_kind(err: BaseException) -> str:
    """``full``, ``readonly``, ``damaged`` or ``io``: from the errno, SQLite's code, or SQLite's message."""
    if isinstance(err, OSError):
        return _OS_KIND.get(err.errno, "io")
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in _SQLITE_KIND:
        return _SQLITE_KIND[code & 0xFF]
    text = str(err).lower()
    if "full" in text:
        return "full"
    if "readonly" in text or "read-only" in text:
        return "readonly"
    if "not a database" in text or "malformed" in text:
        return "damaged"
    return "io"


# paths that are not what ablab needs (no failure of the disk): bad input, exit 2
_BAD_PATH = {
    errno.ELOOP: "a symbolic link in this path loops; fix or remove the link, or choose another path",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter study name or --out",
    errno.ENOTDIR: "a part of this path is a file where a folder is needed; move it away or choose another path",
    errno.EISDIR: "a folder where ablab needs a file; move it away or choose another path",
    errno.EEXIST: "something else already has this name (a file where ablab needs a folder?); move it away or "
                  "choose another path",
}


def io_error(path: str | Path, err: BaseException) -> StoreError:
    """The one message for ``err`` on ``path``: what happened, the system's words, and what to do.

    A ``StoreIOError`` (exit 74) for a failure of the disk or the database; a plain ``StoreError``
    (exit 2) for a path that is not what ablab needs (a file in a folder's place, a looping link,
    a name too long)."""
    detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    if isinstance(err, OSError) and err.errno in _BAD_PATH:
        return StoreError(f"{path}: {_BAD_PATH[err.errno]} ({detail})")
    return StoreIOError(f"{path}: {_ADVICE[failure_kind(err)]} ({detail})")


def is_bad_path(err: BaseException) -> bool:
    """An OS error that says a path is not what ablab needs (``io_error`` makes it bad input)."""
    return isinstance(err, OSError) and err.errno in _BAD_PATH


@contextlib.contextmanager
def failing_as_io(path: str | Path) -> Iterator[None]:
    """Turn a disk or database failure inside the block into ``io_error`` on ``path`` (or the OS's filename)."""
    try:
        yield
    except (OSError, sqlite3.DatabaseError) as err:
        if not is_io_failure(err):
            raise
        raise io_error(getattr(err, "filename", None) or path, err) from None
