"""Atomic file writes: a reader never sees half a file, and a killed writer's temporary file is removed later.

``write_atomic`` writes to ``.NAME.tmp-PID`` beside the target, fsyncs, then renames over it.
A failed write removes its temporary file at once; one left by a kill (the writer's PID is dead)
is removed by ``remove_stale_temp_files`` when the study runs again. Imports nothing from ablab.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TEMP_NAME = re.compile(r"\..+\.tmp-(\d+)")  # temp_path's names: .NAME.tmp-PID


def temp_path(path: Path) -> Path:
    """The temporary file of this process's atomic write to ``path``: ``.NAME.tmp-PID`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over it.

    A failed write (a full disk) removes its temporary file and leaves the old content of ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(root: str | Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID`` files under ``root`` whose writer PID is dead (a kill mid-write); returns them.

    Files of live processes stay: ``ablab report`` may be writing while a run starts. Symbolic
    links are not followed, so nothing outside ``root`` is touched.
    """
    removed = []
    for folder, _, names in os.walk(root):
        for name in names:
            match = _TEMP_NAME.fullmatch(name)
            if match and not pid_alive(int(match.group(1))):
                path = Path(folder) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """A process ``pid`` exists on this machine (signal 0 checks without sending anything)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return True  # not a process id: os.kill would address a process group; leave the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False  # larger than any pid
    return True
