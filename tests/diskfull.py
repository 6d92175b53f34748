"""A full disk during training, on demand: process tests and benchmarks/soak_faults.py fill it while a
study runs and free it again, whatever executor runs the study.

``install(folder)`` writes the module ``full_disk`` (a study's ``imports: [full_disk]`` loads it in
the driver and every worker, forked, forkserver, spawned or on Ray). While the file ``disk-full``
lies beside it (``fill``), every artifact a worker stages fails as on a full disk (ENOSPC); ``free``
takes the file away.
"""

from __future__ import annotations

from pathlib import Path

MODULE = "full_disk"
FLAG = "disk-full"

SOURCE = '''
import errno
from pathlib import Path

import ablab.train.result as result

FULL = Path(__file__).with_name("disk-full")
_real_write = result.write_atomic


def write_atomic(path, data):
    if FULL.exists():
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return _real_write(path, data)


result.write_atomic = write_atomic
'''


def install(folder: Path) -> str:
    """Write the module into ``folder`` (a study's own folder); the name to list in its ``imports``."""
    (folder / f"{MODULE}.py").write_text(SOURCE)
    return MODULE


def fill(folder: Path) -> None:
    """From now on every staged artifact write of a study importing the module from ``folder`` fails."""
    (folder / FLAG).touch()


def free(folder: Path) -> None:
    """Space freed: writes succeed again."""
    (folder / FLAG).unlink(missing_ok=True)
