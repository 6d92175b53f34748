"""What is left of ablab's private Ray instance is killed as soon as its driver is gone, however it ends.

Ray ties its GCS, raylet and workers to the driver (they die within a second or two of a kill -9),
but not the two agents the raylet starts on every node, dashboard or not: ``ray::DashboardAgent``
and ``ray::RuntimeEnvAgent``. Seeing their raylet die unexpectedly, each reports it to the GCS
(``ray._private.process_watcher.report_raylet_error_logs``), which is gone too, and waits out that
call's fixed 60 s timeout before it exits (Ray 2.60).

So the driver starts this script (``python ray_reaper.py ROOT_PID...``, the processes ``ray.init``
started) with a pipe on its stdin that only the driver holds. While the pipe is open it records the
roots and their descendants by pid and start time; when the pipe closes (the driver shut Ray down,
or died) it sends SIGKILL to every recorded process that still runs, then exits. Linux only (/proc);
stdlib only, so it starts in a fraction of a second without importing ablab or torch.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from pathlib import Path

POLL_S = 0.5  # how often the process tree is read while the driver lives


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                found[int(entry.name)] = int(fields[1])
    return found


def children_of(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    return {p for p, parent in parents().items() if parent == pid}


def started(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), None if it is gone: with the pid, it names one process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def tree(roots: set[int]) -> dict[int, int]:
    """``roots`` and all their live descendants: pid -> start time."""
    parent_of = parents()
    found, frontier = set(), {r for r in roots if r in parent_of}
    while frontier:
        found |= frontier
        frontier = {p for p, parent in parent_of.items() if parent in frontier and p not in found}
    return {pid: t for pid in found if (t := started(pid)) is not None}


def driver_gone(timeout_s: float) -> bool:
    """True once stdin, the driver's pipe, is closed (nothing is ever written to it)."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout_s)
    return bool(ready) and not os.read(sys.stdin.fileno(), 1)


def reap(roots: set[int]) -> None:
    """Record the tree under ``roots`` while the driver lives; then SIGKILL what of it still runs."""
    seen: dict[int, int] = {}
    while True:
        seen.update(tree(roots))
        if driver_gone(POLL_S):
            break
    seen.update(tree(roots))
    for pid, start in seen.items():
        if started(pid) == start:  # the same process, not a new one with a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


if __name__ == "__main__":
    for sig in (signal.SIGINT, signal.SIGHUP):  # a terminal's Ctrl-C or hang-up is the driver's to handle
        signal.signal(sig, signal.SIG_IGN)
    reap({int(a) for a in sys.argv[1:]})
