"""Progress of a study: a redrawn status line on a terminal, plain log lines otherwise.

The status line puts what matters first, so that a narrow terminal cuts the least useful part: runs
done, the ETA and the elapsed time, then each running run's epoch.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from typing import TextIO


@dataclass
class _Active:
    label: str
    epoch: int = 0
    epochs: int = 0
    first: int | None = None  # the epoch of the run's first report (a continued run starts past 0)
    runs: int = 1  # a pack of R runs trains as one line of the status


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressView:
    """Runs done/total, each running run's epoch, elapsed time and ETA."""

    def __init__(self, total: int, already_done: int = 0, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = total
        self.done = already_done
        self.todo = total - already_done
        self.finished_now = 0
        self.active: dict[str, _Active] = {}
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._closed = False  # after close() the status line is never drawn again
        if not self.tty:
            self._log(f"{self.todo} of {total} runs to do ({already_done} already stored)")

    # ---- events

    def note(self, text: str) -> None:
        """A line for the log (the packing plan, a family of runs not packed and why)."""
        self._log(text)

    def started(self, run_id: str, label: str, replicate: int, epochs: int = 0) -> None:
        """A run started; ``epochs``: its planned total where the spec gives it (0: known at its first report)."""
        self.active[run_id] = _Active(f"{label} #{replicate}", epochs=epochs)
        self._draw(force=True)

    def packed(self, run_ids: list[str]) -> None:
        """The runs ``run_ids`` (started) train as one pack: one entry ``label #a, #b … ×R`` in the status line."""
        first = self.active.get(run_ids[0])
        if first is None or len(run_ids) < 2:
            return
        others = [self.active.pop(r) for r in run_ids[1:] if r in self.active]
        reps = [first.label.rsplit(" #", 1)[-1], *(a.label.rsplit(" #", 1)[-1] for a in others)]
        first.label = f"{first.label.rsplit(' #', 1)[0]} #{','.join(reps)} packed ×{len(run_ids)}"
        first.runs = len(run_ids)
        self._draw(force=True)

    def epoch(self, run_id: str, epoch: int, epochs: int) -> None:
        a = self.active.get(run_id)
        if a is not None:
            a.epoch, a.epochs = epoch, epochs
            a.first = epoch if a.first is None else a.first
        self._draw()

    def finished(self, run_id: str, label: str, replicate: int, status: str, duration_s: float, note: str = "") -> None:
        self.active.pop(run_id, None)
        self.done += 1
        self.finished_now += 1
        if not self.tty or status != "done":
            extra = f"  {note}" if note else ""
            self._log(f"[{self.done}/{self.total}] {status:<8} {label} #{replicate} ({run_id}) in {duration_s:.1f}s{extra}")
        self._draw(force=True)

    def close(self) -> None:
        """Replace the status line with the summary line; the cursor ends at the start of an empty line."""
        self._closed = True
        elapsed = time.monotonic() - self.start
        self._log(f"{self.finished_now} runs finished in {_clock(elapsed)}; {self.done}/{self.total} stored")
        self.stream.flush()

    # ---- drawing

    def eta_seconds(self) -> float | None:
        """Remaining time from the work done so far (finished runs plus epochs of running ones)."""
        progress = self.finished_now + sum(a.runs * (a.epoch - a.first) / (a.epochs - a.first) for a in self.active.values()
                                           if a.first is not None and a.epochs > a.first)
        if progress <= 0:
            return None
        elapsed = time.monotonic() - self.start
        return elapsed * (self.todo - progress) / progress

    def line(self) -> str:
        """Runs done, ETA, elapsed, then the running runs' epochs: a narrow terminal cuts from the end."""
        eta = self.eta_seconds()
        parts = [f"{self.done}/{self.total} runs", f"ETA {_clock(eta)}" if eta is not None else "ETA ?",
                 f"elapsed {_clock(time.monotonic() - self.start)}"]
        for a in self.active.values():
            parts.append(f"{a.label} epoch {a.epoch}/{a.epochs or '?'}")
        return " | ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if not self.tty or self._closed:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\x1b[2K" + self.line()[: width - 1])
        self.stream.flush()

    def _log(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty:
            self._draw(force=True)
