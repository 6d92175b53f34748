"""Scale out: the local executor with 2 worker processes vs 1, the Ray executor vs the local one, and Ray's cost per run.

Targets (issue "Scale out", performance item), on a 20-run study (the default MLP on digits,
batch 64, 2000 steps with the default recording: ~1.3 s of training per run on one free core),
every run with 1 torch thread (``--threads``), timed end to end through ``run_study`` into a
fresh temporary store:

  (a) local executor, 2 worker processes vs 1 (in the driver): speed-up ≥ 1.7× on 2 cores, i.e.
      wall time 2 workers / 1 worker ≤ 1/1.7 = 0.588. Both use 1 thread per run, so this
      compares processes, not threads.
  (b) Ray executor / local executor, same workers (2) and threads (1): wall time ≤ 1.2×, judged
      on the whole wall time (Ray's start-up and shut-down included), on this study and on one
      whose runs are LONG (4) times as long: a private Ray instance costs a fixed ~4-6 s to start
      and stop, which a 20-run study of 1.4-s runs cannot hide. Also reported with Ray already
      started and its two worker processes warm (imports done), which excludes that cost.
  (c) Ray's fixed cost per run (reported): a study of N runs with ``steps: 1`` and evaluation off,
      (i) by timestamps: submit (``store.mark_running``) to ``store.record`` returning, minus the
      worker's own ``duration_s``, median over runs; (ii) by wall time with one run in flight:
      (wall − N × the in-process time of such a run) / N. The local executor's in-process
      numbers (store writes only) are printed beside them.

Method. Every case runs in a fresh Python process (this script with ``--child``), as
``ablab run`` would: the driver pays its own first-run costs (sklearn import, torch._dynamo
import on the first optimizer), spawned or Ray workers pay theirs. Cases alternate: even
repetitions local 1 → local 2 → Ray, odd ones the reverse (and Ray "whole" and "warm" swap), so
each ratio compares neighbours in time. Per repetition the ratios are computed, then the median
over repetitions. Beside each wall time: the CPU seconds of the driver and all its descendant
processes (workers, Ray's daemons; /proc sampled every 0.25 s) divided by the wall time ("cores
used"), the whole machine's busy fraction (/proc/stat) and each run's own ``duration_s``; before
and after, a busy-loop probe measures the cores this session gets with 1 and with 2 busy
processes. So a miss can be told apart: start-up, per-run overhead, or CPU the machine did not give.

The local executor forks its workers from the warm driver (1 thread per run); ``--diagnose`` adds
the same study with its workers started by ``forkserver`` (ablab's method for runs with more than
1 thread) and by ``spawn`` (cold workers: ablab's method before fork; each worker imports torch,
torch._dynamo and ablab and loads the data itself).

Run: ``python benchmarks/bench_executors.py [--threads N] [--quick] [--reps R] [--diagnose]``.
With the default 2 repetitions it takes about 8 min on the 2-core CPU when nothing else runs
(the long study is 2 min per repetition); ``--diagnose`` adds about 40 s per repetition.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from _harness import Verdict, median, print_table, write_summary

SPEEDUP_TARGET = 1.7  # local executor, 2 workers vs 1 worker
TIME_TARGET = 1 / SPEEDUP_TARGET  # the same as a time ratio (value <= target passes)
RAY_TARGET = 1.2  # Ray / local wall time, same workers and threads
WORKERS = 2
STEPS = 2000  # per run: ~1.3 CPU-s of training on one core (~1.3 s on a free core)
LONG = 4  # the second study for Ray / local: runs LONG times as long (~5.5 s), as Ray's start-up is fixed
LRS = [0.01, 0.02, 0.05, 0.1, 0.2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = Path(__file__).resolve()


# ---- the studies


def make_study(name: str, runs: int, steps: int, evaluate: bool = True):
    """``runs`` runs of the default MLP on digits: a grid over 5 learning rates × seeds (runs % 5 == 0), else seeds."""
    from ablab.spec import Study

    record = {} if evaluate else {"every_steps": 10**9, "eval_splits": []}
    raw = {
        "name": name,
        "base": {
            "data": {"name": "digits"}, "model": {"name": "mlp"},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "steps": steps, "batch_size": 64, "device": "cpu", "record": record,
        },
    }
    if runs % len(LRS) == 0:
        raw["grid"] = {"optimizer.lr": LRS}
        raw["seeds"] = {"replicates": runs // len(LRS)}
    else:
        raw["seeds"] = {"replicates": runs}
    return Study.model_validate(raw)


# ---- measurement helpers used in the child process


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds user + system) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_jiffies() -> tuple[int, int]:
    """(total, idle + iowait) jiffies over all cores since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


class CpuMeter:
    """CPU seconds used by this process and every descendant, and the machine's busy fraction.

    Descendants are found by walking /proc every ``period`` s; a process that exits between two
    samples loses at most that much of its time (workers are idle when they exit).
    """

    def __init__(self, period: float = 0.25):
        self.period = period
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> dict[int, float]:
        procs = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                info = _proc_cpu(int(name))
                if info is not None:
                    procs[int(name)] = info
        me = os.getpid()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = {}, [me]
        while todo:
            pid = todo.pop()
            if pid in procs:
                out[pid] = procs[pid][1]
            todo += children.get(pid, [])
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.last.update(self._tree())

    def start(self) -> "CpuMeter":
        self.base = self._tree()
        self.last = dict(self.base)
        self.machine0 = _machine_jiffies()
        self._thread.start()
        return self

    def stop(self) -> tuple[float, float]:
        """(CPU seconds of this process tree, machine busy fraction) since ``start``."""
        self._stop.set()
        self._thread.join()
        self.last.update(self._tree())
        total1, idle1 = _machine_jiffies()
        total0, idle0 = self.machine0
        cpu = sum(c - self.base.get(pid, 0.0) for pid, c in self.last.items())
        return cpu, 1 - (idle1 - idle0) / max(1, total1 - total0)


class Stamps:
    """Per-run timestamps from the driver's store calls (the store's class is patched in the child only)."""

    def __init__(self):
        from ablab.store import Store

        self.submit: dict[str, float] = {}
        self.runs: list[dict] = []
        mark, record = Store.mark_running, Store.record
        stamps = self

        def mark_running(store, run_id):
            stamps.submit[run_id] = time.time()
            return mark(store, run_id)

        def record_result(store, result):
            t = time.time()
            record(store, result)
            stamps.runs.append({
                "id": result.run_id, "status": result.status, "submit": stamps.submit.get(result.run_id),
                "started": result.started, "duration": result.duration_s, "record_start": t, "record_end": time.time(),
            })

        Store.mark_running, Store.record = mark_running, record_result

    def reset(self) -> None:
        self.submit, self.runs = {}, []


def timed_study(stamps: Stamps, study, executor: str, workers: int, threads: int) -> dict:
    """One ``run_study`` into a fresh temporary store: wall time, CPU, per-run timestamps."""
    from ablab.execute import run_study
    from ablab.spec import expand

    variants = expand(study)
    tmp = tempfile.mkdtemp(prefix="ablab-bench-exec-")
    try:
        stamps.reset()
        load = os.getloadavg()[0]
        meter = CpuMeter().start()
        t0 = time.time()
        p0 = time.perf_counter()
        summary = run_study(study, "bench_executors.py", variants, Path(tmp) / "results", workers=workers,
                            executor=executor, tty=False, threads=threads)
        wall = time.perf_counter() - p0
        t_end = time.time()
        cpu, busy = meter.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if summary.counts != {"done": len(variants)}:
        errors = {r["status"] for r in stamps.runs}
        raise RuntimeError(f"{executor} x {workers}: runs ended {summary.counts} ({errors})")
    return {"wall": wall, "t0": t0, "t_end": t_end, "cpu": cpu, "busy": busy, "load": load,
            "load_after": os.getloadavg()[0], "runs": list(stamps.runs)}


def inprocess_time(study, rounds: int) -> list[float]:
    """Seconds of ``train(spec)`` in this process for the study's first run (after one warm-up call)."""
    from ablab.spec import expand
    from ablab.train.loop import train

    spec = expand(study)[0].spec
    train(spec, run_id="warm-up")
    times = []
    for _ in range(rounds):
        p0 = time.perf_counter()
        result = train(spec, run_id="bench")
        times.append(time.perf_counter() - p0)
        if result.status != "done":
            raise RuntimeError(f"in-process run ended {result.status}: {result.error}")
    return times


RAY_INIT = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}


def ray_start(workers: int) -> None:
    """A private local Ray instance started exactly as ``run_ray`` starts it (resources.cpus = 1)."""
    import ray

    ray.init(address="local", num_cpus=workers, num_gpus=0, _node_ip_address="127.0.0.1", **RAY_INIT)


def _warm_ray_worker(barrier: str, n: int, spec_json: str, threads: int) -> int:
    """Runs on a Ray worker: one run through ablab's task function (imports, dataset, first step),
    then wait until ``n`` workers got here, so that the ``n`` tasks hold ``n`` distinct workers."""
    from ablab.execute.ray_executor import _train_task

    _train_task(spec_json, "warm-up", threads)
    Path(barrier, str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(os.listdir(barrier)) < n and time.time() < deadline:
        time.sleep(0.02)
    return os.getpid()


def ray_warm_up(workers: int, threads: int, study, stamps: Stamps) -> dict:
    """Start every Ray worker process and let each import ablab and train once; seconds taken."""
    import ray

    from ablab.spec import expand

    spec_json = expand(study)[0].spec.canonical_json()
    p0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ablab-bench-barrier-") as barrier:
        task = ray.remote(_warm_ray_worker).options(num_cpus=1)
        pids = ray.get([task.remote(barrier, workers, spec_json, threads) for _ in range(workers)])
    workers_s = time.perf_counter() - p0
    timed_study(stamps, make_study("bench_executors_warm_up", workers, 1, evaluate=False), "ray", workers, threads)
    return {"workers_s": workers_s, "distinct_workers": len(set(pids))}


# ---- --diagnose: the local executor with another start method (patched in the child only)


def force_start_method(method: str) -> None:
    """Make ``ablab.execute.local`` start its workers with ``method`` (spawn: ablab's start method
    before workers were forked warm; forkserver: its method when a run has more than 1 thread)."""
    import ablab.execute.local as local

    local.start_method = lambda threads: method


# ---- the child process: one case (or the Ray group of cases), results as JSON


def child(config: dict) -> None:
    torch.set_num_threads(config["threads"])
    stamps = Stamps()
    study = make_study("bench_executors", config["runs"], config["steps"])
    threads, out = config["threads"], {}
    case = config["case"]
    if case in ("local1", "local2"):
        workers = 1 if case == "local1" else WORKERS
        out[case] = timed_study(stamps, study, "local", workers, threads)
    elif case in ("local2_forkserver", "local2_spawn"):
        force_start_method(case.split("_")[1])
        out[case] = timed_study(stamps, study, "local", WORKERS, threads)
    elif case in ("local2_long", "ray_long"):
        long_study = make_study("bench_executors_long", config["runs"], config["steps"] * LONG)
        out[case] = timed_study(stamps, long_study, "ray" if case == "ray_long" else "local", WORKERS, threads)
    elif case == "ray":
        import ray

        fixed = make_study("bench_executors_fixed", config["fixed_runs"], 1, evaluate=False)
        for part in (["warm", "whole"] if config["warm_first"] else ["whole", "warm"]):
            if part == "whole":
                out["ray_whole"] = timed_study(stamps, study, "ray", WORKERS, threads)
                continue
            p0 = time.perf_counter()
            ray_start(WORKERS)
            init_s = time.perf_counter() - p0
            try:
                warm = ray_warm_up(WORKERS, threads, fixed, stamps)
                out["ray_warm"] = timed_study(stamps, study, "ray", WORKERS, threads)
                out["ray_warm"] |= {"init_s": init_s, **warm}
                # (c) fixed cost per run: steps=1, evaluation off; the in-process time first (it warms the driver)
                out["fixed_inprocess"] = inprocess_time(fixed, rounds=15)
                order = [("ray", 1), ("ray", WORKERS), ("local", 1)]
                for executor, workers in (order if config["warm_first"] else order[::-1]):
                    out[f"fixed_{executor}{workers}"] = timed_study(stamps, fixed, executor, workers, threads)
            finally:
                p0 = time.perf_counter()
                ray.shutdown()
                shutdown_s = time.perf_counter() - p0
            out["ray_warm"]["shutdown_s"] = shutdown_s
    else:
        raise ValueError(f"unknown case {case!r}")
    Path(config["result"]).write_text(json.dumps(out))


# ---- the parent: run the children, then the tables


def run_child(config: dict, log: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="ablab-bench-child-") as tmp:
        config = {**config, "result": str(Path(tmp) / "result.json")}
        with open(log, "w") as err:
            proc = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(config)],
                                  stdout=err, stderr=subprocess.STDOUT, cwd=HERE.parent)
        if proc.returncode != 0 or not Path(config["result"]).exists():
            tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
            raise RuntimeError(f"case {config['case']} failed (exit status {proc.returncode}):\n{tail}")
        return json.loads(Path(config["result"]).read_text())


def run_overheads(m: dict) -> dict[str, float]:
    """Per-run medians over runs (seconds): duration, dispatch, return, store.record, total overhead."""
    runs = m["runs"]
    end = lambda r: r["started"] + r["duration"]  # noqa: E731
    return {
        "duration": median([r["duration"] for r in runs]),
        "dispatch": median([r["started"] - r["submit"] for r in runs]),  # mark_running, send, deserialise, validate
        "return": median([r["record_start"] - end(r) for r in runs]),  # result back to the driver
        "record": median([r["record_end"] - r["record_start"] for r in runs]),
        "overhead": median([r["record_end"] - r["submit"] - r["duration"] for r in runs]),
    }


def startup(m: dict, workers: int) -> tuple[float, float]:
    """(seconds from run_study's call to the first run's training start, mean extra seconds of each worker's first run)."""
    runs = sorted(m["runs"], key=lambda r: r["started"])
    first_start = runs[0]["started"] - m["t0"]
    typical = median([r["duration"] for r in runs])
    firsts = runs[:workers]  # the first run of each worker (runs start in submission order)
    return first_start, statistics.mean(r["duration"] - typical for r in firsts)


SPIN = ("import time\nt = time.perf_counter()\nc = time.process_time()\n"
        "while time.perf_counter() - t < {s}: pass\nprint(time.process_time() - c)")


def cores_available(seconds: float = 1.5) -> tuple[float, float]:
    """Cores this session gets right now: CPU s / wall of 1, then 2, busy-looping processes."""

    def spin(n: int) -> float:
        command = [sys.executable, "-S", "-c", SPIN.format(s=seconds)]
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return sum(float(p.communicate()[0]) for p in procs) / seconds

    return spin(1), spin(2)


def fmt_list(xs: list[float], digits: int = 1) -> str:
    return " ".join(f"{x:.{digits}f}" for x in xs)


def parse_args() -> argparse.Namespace:
    """The options every benchmark takes (see _harness.parse_args), plus --reps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="4 short runs, one repetition: checks that the benchmark runs; numbers are not meaningful")
    parser.add_argument("--diagnose", action="store_true",
                        help="also the local executor with 2 workers started by forkserver and by spawn")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of every case (default 2)")
    parser.add_argument("--summary-json", help="also write the verdicts here (used by run_all.py)")
    args = parser.parse_args()
    if args.threads < 1 or args.reps < 1:
        parser.error("--threads and --reps must be at least 1")
    return args


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]))
        return
    args = parse_args()
    torch.set_num_threads(args.threads)
    try:
        import ray  # noqa: F401

        have_ray = True
    except ImportError:
        have_ray = False
    runs, steps, fixed_runs, reps = (4, 100, 4, 1) if args.quick else (20, STEPS, 20, args.reps)
    print('== bench_executors — issue "Scale out": local executor 2 workers vs 1, Ray vs local, Ray cost per run')
    print(f"   {datetime.date.today()}  torch {torch.__version__}  runs on cpu ({platform.processor() or platform.machine()}), "
          f"{os.cpu_count()} cores  torch threads per run {args.threads}  "
          f"{'ray ' + __import__('ray').__version__ if have_ray else 'ray not installed: Ray cases skipped'}"
          + ("  [--quick: numbers not meaningful]" if args.quick else ""))
    print(f"   study: {runs} runs (mlp on digits, batch 64, {steps} steps, default recording), {reps} repetition(s); "
          f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    available = [cores_available()]
    print(f"   cores this session gets now: {available[0][0]:.2f} with 1 busy process, {available[0][1]:.2f} with 2",
          flush=True)

    base = {"threads": args.threads, "runs": runs, "steps": steps, "fixed_runs": fixed_runs}
    results: dict[str, list[dict]] = {}
    started = time.perf_counter()
    log_dir = Path(tempfile.mkdtemp(prefix="ablab-bench-exec-logs-"))
    try:
        for rep in range(reps):
            order = (["local1", "local2"] + (["local2_forkserver", "local2_spawn"] if args.diagnose else [])
                     + (["ray", "local2_long", "ray_long"] if have_ray else []))
            for case in (order if rep % 2 == 0 else order[::-1]):
                out = run_child({**base, "case": case, "warm_first": rep % 2 == 1}, log_dir / f"{case}-{rep}.log")
                for name, m in out.items():
                    results.setdefault(name, []).append(m)
                loads = [m["load"] for m in out.values() if isinstance(m, dict)]
                print(f"   rep {rep + 1}/{reps} {case:<6} " + "  ".join(
                    f"{n} {m['wall']:.1f} s" for n, m in out.items() if isinstance(m, dict) and n[:5] != "fixed")
                      + f"  (load {max(loads):.1f})", flush=True)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)

    available.append(cores_available())
    verdicts = report(results, args, reps, runs)
    print(f"   cores this session got with 1 / 2 busy processes: {available[0][0]:.2f} / {available[0][1]:.2f} at the "
          f"start, {available[1][0]:.2f} / {available[1][1]:.2f} at the end (2 free cores: 1.00 / 2.00)")
    print(f"   total {time.perf_counter() - started:.0f} s; load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    write_summary(args.summary_json, verdicts)


def report(results: dict[str, list[dict]], args: argparse.Namespace, reps: int, runs: int) -> list[Verdict]:
    verdicts: list[Verdict] = []
    cases = [("local1", "local, 1 worker (in the driver)", 1),
             ("local2", "local, 2 worker processes (forked warm)", 2),
             ("local2_forkserver", "  local, 2 workers, forkserver + preload", 2),
             ("local2_spawn", "  local, 2 workers, spawn (cold)", 2),
             ("ray_whole", "ray, 2 workers, whole (init + shutdown)", 2),
             ("ray_warm", "ray, 2 workers, started + warm", 2),
             ("local2_long", f"local, 2 workers, runs {LONG}x as long", 2),
             ("ray_long", f"ray, 2 workers, whole, runs {LONG}x as long", 2)]
    rows = []
    for key, label, workers in cases:
        if key not in results:
            continue
        ms = results[key]
        walls = [m["wall"] for m in ms]
        over = [run_overheads(m) for m in ms]
        first = [startup(m, workers) for m in ms]
        rows.append([
            label, f"{workers}x{args.threads}", fmt_list(walls), f"{median(walls):.1f}",
            f"{median([m['cpu'] for m in ms]):.1f}",
            f"{median([m['cpu'] / m['wall'] for m in ms]):.2f}", f"{median([m['busy'] for m in ms]):.0%}",
            f"{median([m['load'] for m in ms]):.1f}",
            f"{median([o['duration'] for o in over]):.2f}", f"{median([f[0] for f in first]):.1f}",
            f"{median([f[1] for f in first]):.1f}", f"{1e3 * median([o['overhead'] for o in over]):.0f}",
        ])
    print_table(
        f"end to end: run_study of {runs} runs into a fresh store, each case in a fresh process; medians over {reps} rep(s)\n"
        "    CPU s = of the driver and its descendant processes (workers, Ray's daemons); cores used = CPU s / wall;\n"
        "    busy = the whole machine's busy fraction; run s = median duration_s of a run (in its worker);\n"
        "    1st start = run_study call to the first run's training start; 1st extra = a worker's first run minus\n"
        "    a typical run; overhead = submit to stored - duration_s",
        ["case", "workers x threads", "wall s (each rep)", "wall s", "CPU s", "cores used", "busy", "load",
         "run s", "1st start s", "1st extra s", "overhead ms"], rows)

    rows = []

    def ratio_row(what: str, num: str, den: str, target: float | None, unit_label: str, show=lambda x: x):
        if num not in results or den not in results:
            return
        per_rep = [a["wall"] / b["wall"] for a, b in zip(results[num], results[den])]
        value = median(per_rep)
        verdict = None
        if target is not None:
            verdict = Verdict("bench_executors", what, value, target, "x")
            verdicts.append(verdict)
        rows.append([what, fmt_list([show(x) for x in per_rep], 3), f"{show(value):.3f}", unit_label,
                     verdict.result if verdict else "info"])

    ratio_row("local 2 workers / 1 worker, wall (1/speed-up)", "local2", "local1", TIME_TARGET, f"<= {TIME_TARGET:.3f}")
    ratio_row("  = speed-up 1 -> 2 workers", "local2", "local1", None, f">= {SPEEDUP_TARGET:.1f}", show=lambda x: 1 / x)
    ratio_row("  forkserver: 2 workers / 1 worker", "local2_forkserver", "local1", None, "(info)")
    ratio_row("  spawn: 2 workers / 1 worker", "local2_spawn", "local1", None, "(info)")
    ratio_row("ray / local, 2 workers, whole wall", "ray_whole", "local2", RAY_TARGET, f"<= {RAY_TARGET:.1f}")
    ratio_row(f"ray / local, 2 workers, whole wall, runs {LONG}x as long", "ray_long", "local2_long", RAY_TARGET,
              f"<= {RAY_TARGET:.1f}")
    ratio_row("ray / local, 2 workers, Ray started + warm", "ray_warm", "local2", None, "(info)")
    print_table("targets: ratios of wall times per repetition (neighbours in time), median over repetitions",
                ["quantity", "each rep", "median", "target", "result"], rows)

    if "ray_warm" in results:
        warm = results["ray_warm"]
        whole = results["ray_whole"]
        rows = [
            ["ray.init (private local instance)", fmt_list([m["init_s"] for m in warm], 2)],
            ["start 2 workers + import + first run (barrier)", fmt_list([m["workers_s"] for m in warm], 2)],
            ["ray.shutdown", fmt_list([m["shutdown_s"] for m in warm], 2)],
            ["whole - warm wall (Ray's start-up + shut-down in run_study)",
             fmt_list([a["wall"] - b["wall"] for a, b in zip(whole, warm)], 2)],
            ["distinct warm workers", " ".join(str(m["distinct_workers"]) for m in warm)],
        ]
        print_table("Ray start-up, seconds per repetition", ["phase", "s (each rep)"], rows)

        rows = []
        n = len(results["fixed_ray1"][0]["runs"])
        t_in = median([median(ts) for ts in results["fixed_inprocess"]])
        for key, label in (("fixed_ray1", "ray, 1 in flight"), ("fixed_ray2", "ray, 2 in flight"),
                           ("fixed_local1", "local, in-process (store only)")):
            ms = results[key]
            over = [run_overheads(m) for m in ms]
            wall_method = [(m["wall"] - n * t_in) / n for m in ms] if key != "fixed_ray2" else None
            rows.append([
                label, f"{1e3 * median([o['overhead'] for o in over]):.1f}",
                f"{1e3 * median([o['dispatch'] for o in over]):.1f}", f"{1e3 * median([o['return'] for o in over]):.1f}",
                f"{1e3 * median([o['record'] for o in over]):.1f}",
                fmt_list([1e3 * w for w in wall_method], 1) if wall_method else "",
                f"{median([m['load'] for m in ms]):.1f}",
            ])
        print_table(
            f"(c) fixed cost per run: {n} runs, steps=1, evaluation off, Ray started + warm; ms, median over runs and reps\n"
            f"    overhead = submit to stored - duration_s = dispatch (mark_running, send, deserialise) + return + store.record;\n"
            f"    wall method = (wall - {n} x {1e3 * t_in:.1f} ms in-process run) / {n}, per rep",
            ["executor", "overhead", "dispatch", "return", "record", "wall method (each rep)", "load"], rows)
    return verdicts


if __name__ == "__main__":
    from _harness import own_temp_folder

    with own_temp_folder():  # every temporary folder of this benchmark, removed when it ends
        main()
