"""Shared benchmark machinery: device and threads, synchronized timing, interleaved rounds, tables.

Every benchmark compares a candidate with a baseline measured in the same process. Rounds
interleave the cases (the order flips every round) so slow drift of a shared, noisy machine
(other processes, clock changes) hits both sides alike; each case reports the median over rounds.
A MISS is printed, never raised: the process exits 0 unless a benchmark crashes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from ablab.train.compute import keep_freed_memory


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a host clock read covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for ``fn()``, device work included (synchronized before and after on CUDA)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure_interleaved(
    cases: dict[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each case over ``rounds`` rounds, after ``warmup`` untimed calls each.

    Each round calls every case once; even rounds in the given order, odd rounds reversed.
    """
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(time_call(cases[name], device))
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def median_ci(xs: list[float]) -> tuple[float, float]:
    """About 95 % confidence interval of the median, from order statistics (no distribution assumed).

    Ranks n/2 ± 0.98·√n (the normal approximation to Binomial(n, 1/2)); with few rounds it widens
    to the extremes.
    """
    s, n = sorted(xs), len(xs)
    half = 0.98 * n**0.5
    lo, hi = max(0, int(n / 2 - half)), min(n - 1, int(-(-(n / 2 + half) // 1)))
    return s[lo], s[hi]


def rel_iqr(xs: list[float]) -> float:
    """Interquartile range over the median: the spread printed beside each median."""
    if len(xs) < 4:
        return (max(xs) - min(xs)) / median(xs)
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / median(xs)


@dataclass
class Verdict:
    """One target: the measured value, its bound (value ≤ target passes) and the result; target None: reported only."""

    benchmark: str
    what: str
    value: float
    target: Optional[float]
    unit: str

    @property
    def passed(self) -> bool:
        return self.target is None or self.value <= self.target

    @property
    def result(self) -> str:
        return "reported" if self.target is None else "PASS" if self.passed else "MISS"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    print(f"\n{title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def parse_args(description: str, extra: Optional[Callable[[argparse.ArgumentParser], None]] = None
               ) -> argparse.Namespace:
    """The common options (threads, quick, diagnose, summary) and a benchmark's own (``extra`` adds them)."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads, fixed for the whole run (default 1: see README)")
    parser.add_argument("--quick", action="store_true",
                        help="few rounds: checks that the benchmark runs; numbers are not meaningful")
    parser.add_argument("--diagnose", action="store_true",
                        help="extra rows where a benchmark has them, without targets "
                             "(bench_loop: ablab with deterministic: false)")
    parser.add_argument("--summary-json", help="also write the verdicts here (used by run_all.py)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def setup(args: argparse.Namespace, title: str) -> torch.device:
    """Fix the thread count, keep freed memory as ablab's processes do (every case in this process, ablab's
    and the plain baselines, runs with the same allocator), pick the device and print what the numbers were
    measured on."""
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()
    device = pick_device()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"== {title}")
    print(f"   {datetime.date.today()}  torch {torch.__version__}  device {device} ({where})  "
          f"torch threads {torch.get_num_threads()} of {os.cpu_count()} cores"
          + ("" if kept else "  allocator: C library defaults")
          + ("  [--quick: numbers not meaningful]" if args.quick else ""))
    return device


def write_summary(path: Optional[str], verdicts: list[Verdict]) -> None:
    if path:
        with open(path, "w") as f:
            json.dump([{**asdict(v), "result": v.result} for v in verdicts], f)


OWN_TEMP = "ABLAB_BENCH_TMPDIR"  # the benchmark's folder, for the benchmarks it starts: they use it, not one inside


@contextlib.contextmanager
def own_temp_folder(prefix: str = "ablab-bench-") -> Iterator[Path]:
    """A benchmark's one temporary folder: every temporary folder it and the processes it starts make
    (TMPDIR points there: studies, multiprocessing's ``pymp-*``, Ray's sessions, a killed child's leftovers)
    lies in it, and it is removed when the benchmark ends, by SIGTERM (``kill``, ``timeout``) too, which
    otherwise kills it before any clean-up (``ablab-bench-child-*`` and ``-exec-logs-*`` folders were left
    so). A benchmark started by one uses its folder (nested ones would make Ray's socket paths too long)."""
    inherited = os.environ.get(OWN_TEMP)
    mine = not (inherited and inherited == os.environ.get("TMPDIR") and os.path.isdir(inherited))
    root = tempfile.mkdtemp(prefix=prefix) if mine else inherited
    before = tempfile.tempdir, {name: os.environ.get(name) for name in ("TMPDIR", OWN_TEMP)}
    tempfile.tempdir = os.environ["TMPDIR"] = os.environ[OWN_TEMP] = root
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum)) if main_thread else None
    try:
        yield Path(root)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, sigterm)
        tempfile.tempdir = before[0]
        for name, value in before[1].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if mine:
            shutil.rmtree(root, ignore_errors=True)
