"""The files of a results directory: where the database, a run's artifacts and the staging folder live.

Layout::

    DIR/ablab.db            the database (``ablab.store.database``)
    DIR/runs/<id>/...       a stored run's files: spec.json and its artifacts
    DIR/.staging/<id>/      where a worker writes a run's artifact files before the driver stores them
    DIR/.staging/temp-dirs  temporary folders the driver made elsewhere (``note_temp_dir``), one a line
    DIR/.ablab-run.lock     the writer's lock (``ablab.store.lock``)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from ablab.errors import StoreError
from ablab.files import pid_alive, write_atomic
from ablab.store.errors import failing_as_io

DB_NAME = "ablab.db"
STAGING = ".staging"
TEMP_DIRS = "temp-dirs"  # in the staging folder: "<pid> <path>" a line
RUNS = "runs"


def run_dir(root: Path, run: str) -> Path:
    """The folder of a stored run's files."""
    return root / RUNS / run


def artifact_path(root: Path, run: str, name: str) -> Path:
    """Where a stored run's artifact ``name`` lies."""
    return run_dir(root, run) / name


def staging_dir(root: Path, run: str) -> Path:
    """Where a worker writes the artifact files of ``run`` before the driver stores them."""
    return root / STAGING / run


def reset_staging(root: Path) -> None:
    """An empty staging folder: whatever a killed or failed invocation staged is removed, and the
    temporary folders it made elsewhere (``note_temp_dir``)."""
    require_staging_folder(root)
    remove_noted_temp_dirs(root)
    remove_staging(root)
    with failing_as_io(root / STAGING):
        (root / STAGING).mkdir(parents=True, exist_ok=True)


def require_staging_folder(root: Path) -> None:
    """``.staging`` is ablab's folder: a file of that name is refused (bad input), never removed."""
    staging = root / STAGING
    if (staging.exists() or staging.is_symlink()) and not staging.is_dir():
        raise StoreError(f"{staging}: is a file, not ablab's staging folder; move it away (ablab makes this folder "
                         "itself), then run again")


def remove_staging(root: Path, run: str | None = None) -> None:
    """Remove the staging folder (``run``: that run's part of it only)."""
    shutil.rmtree(root / STAGING if run is None else staging_dir(root, run), ignore_errors=True)


def note_temp_dir(root: Path, path: str | Path) -> None:
    """Note ``path``, a temporary folder this process made outside ``root`` for the study (multiprocessing's):
    a driver killed before its exit work leaves it, and the next invocation in ``root`` removes it."""
    with failing_as_io(root / STAGING / TEMP_DIRS), open(root / STAGING / TEMP_DIRS, "a") as notes:
        notes.write(f"{os.getpid()} {path}\n")


def remove_noted_temp_dirs(root: Path) -> None:
    """Remove the temporary folders noted by processes that are gone; a live one's (this process, a
    notebook that ran a study here before) stay: that process may use them still."""
    try:
        lines = (root / STAGING / TEMP_DIRS).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for line in lines:
        pid, _, path = line.partition(" ")
        folder = Path(path)
        if not pid.isdigit() or pid_alive(int(pid)) or not folder.is_absolute():
            continue
        with contextlib.suppress(OSError):
            if folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.getuid():
                shutil.rmtree(folder, ignore_errors=True)


def remove_run_dirs(root: Path, runs: set[str]) -> None:
    """Remove the files of ``runs`` (runs without a final status: leftovers of an interrupted commit)."""
    folder = root / RUNS
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name in runs and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def place_run_files(root: Path, run: str, spec_file: dict[str, Any], artifacts: Iterable[Any]) -> None:
    """Put a finished run's files into ``runs/<id>/``: ``spec.json``, then each artifact.

    An artifact staged by the worker (``path``) is moved into place; one held in memory is written
    atomically (``read()``). Each failure is one ``StoreIOError`` naming the file.
    """
    folder = run_dir(root, run)
    with failing_as_io(folder / "spec.json"):
        write_atomic(folder / "spec.json", json.dumps(spec_file, indent=2).encode())
    for art in artifacts:
        target = folder / art.name
        with failing_as_io(target):
            if art.path is not None and Path(art.path).is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(art.path, target)  # a rename within the study directory: atomic
            else:
                write_atomic(target, art.read())


def require_results_path(path: Path) -> None:
    """One clear error, before anything is written, when ``path`` cannot hold a store (a file; ``ablab.db`` a folder)."""
    require_directory(path)
    if (path / DB_NAME).is_dir():
        raise StoreError(f"{path / DB_NAME}: is a directory, not a results database; move it away or choose another --out")
    require_staging_folder(path)


def require_directory(path: Path) -> None:
    """A results directory must be a folder or not exist yet (``--out`` naming a file is bad input)."""
    _require_short_names(path)
    for part in (path, *path.parents):
        if part.is_symlink() and not part.exists():
            _require_link_target(path, part)
        if part.exists():
            if not part.is_dir():
                raise StoreError(f"{path}: {part} is a file, not a folder; choose a results directory (--out) "
                                 "that is a folder or does not exist yet")
            return


def _require_short_names(path: Path) -> None:
    """Each name in ``path`` fits the file system (a 300-character study name does not: bad input)."""
    limit = 255
    with contextlib.suppress(OSError, ValueError):
        existing = next(p for p in (path, *path.parents) if p.is_dir())
        limit = os.pathconf(existing, "PC_NAME_MAX")
    for name in path.parts:
        if len(os.fsencode(name)) > limit:
            raise StoreError(f"{path}: the name '{name[:40]}…' is {len(os.fsencode(name))} bytes long, more than the "
                             f"file system allows ({limit}); choose a shorter study name or --out")


def _require_link_target(path: Path, link: Path) -> None:
    """A link on the way to a results directory that loops is bad input (a dangling one is made as a folder)."""
    try:
        os.stat(link)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StoreError(f"{path}: {link} is a symbolic link that loops; fix or remove the link, or choose "
                             "another results directory (--out)") from None


def require_store_file(path: Path) -> None:
    """``path`` holds a non-empty ``ablab.db`` file, or one message says what it holds instead."""
    db = path / DB_NAME
    if db.is_dir():
        raise StoreError(f"{db}: is a directory, not a results database; name a results directory written by 'ablab run'")
    if not db.is_file():
        raise StoreError(f"{path}: not an ablab results directory (no {DB_NAME}); run 'ablab run SPEC' first")
    if db.stat().st_size == 0:
        raise StoreError(f"{db}: is empty (0 bytes), not an ablab store; remove it, or run the study into this "
                         "directory again")
