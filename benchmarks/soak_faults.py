"""Fault-injection campaign (issues 11 and 26): random kills of the driver, of one worker and of the whole
process group, Ctrl-C and SIGTERM, a full disk during training and a damaged store, against a small study
with checkpoints, resuming after each.

A fault strikes only while the study is known to be running, whatever the machine's speed: the
study's model is tests/gates.py's ``gated_mlp``, whose runs hold at a random training step (the
same for every run of the invocation) until the gate opens; the fault is sent once a run of this
invocation is marked running in the store and holds at the gate in a worker seen under the driver
(the one ``kill-worker`` kills), then the gate opens. Invocations without a fault never hold.
``disk-full`` strikes the same way: every artifact write fails with ENOSPC (tests/diskfull.py's module,
imported by the study) until the invocation ended, then the space is freed. ``drop-table`` and
``truncate-db`` damage the store between invocations (after a copy, as a user's backup; the store of
the round, or of the round just finished where the new one has none yet): the invocation must refuse
it (exit 74) and leave the damaged file as it was; the copy is put back and the same command resumes
(a finished round's: stores nothing new, loses nothing).

After every cycle it checks: nothing lost (runs done before stay done, untouched; every indexed
artifact on disk with its size and digest), nothing duplicated (metric rows, retrained runs,
artifact files not in the index), no run left ``running`` after a clean stop or a finished resume,
no temporary file after a finished resume, no process of the invocation alive 30 s after it ended
(by pid: the driver's descendants, polled while it ran), no failed exit from an invocation the fault
missed (its stderr goes into the note), and every stored run's metrics equal to an
uninterrupted reference run, bitwise. A round ends when a resume finishes the study; the next
round starts from an empty results directory. Processes are found with tests/procnet.py, the
suite's /proc helpers (one copy, imported from there).

    python benchmarks/soak_faults.py --kills 24 --seed 1      # the long campaign (minutes)
    python benchmarks/soak_faults.py --kills 24 --threads 2   # workers from a forkserver
    python benchmarks/soak_faults.py --kills 3 --quick        # a smoke run

Prints one line per cycle and a summary; exit status 0 when every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's /proc helpers, shared
import diskfull  # noqa: E402
import gates  # noqa: E402
import procnet  # noqa: E402

KINDS = ("kill-driver", "kill-group", "kill-worker", "ctrl-c", "sigterm", "disk-full", "drop-table", "truncate-db")
EXPECTED_EXIT = {"kill-driver": {-9}, "kill-group": {-9}, "kill-worker": {0, 1}, "ctrl-c": {130}, "sigterm": {143},
                 "disk-full": {74}, "drop-table": {74}, "truncate-db": {74}}
CLEAN_STOP = {"ctrl-c", "sigterm", "disk-full"}  # the driver stops the study itself: no run is left running
DAMAGE = ("drop-table", "truncate-db")  # between invocations, to the store


MIN_STEPS_PER_EPOCH = 10  # digits' training split in batches of 64 has more: a hold at step < 10 × epochs is reached


def study(gate: Path, epochs: int = 6) -> dict:
    """4 runs (2 learning rates × 2 seeds) on the embedded digits, with checkpoints every 2 epochs and at the end;
    each run holds at ``gate`` while it is closed (``gates.close_gate``)."""
    return {"name": "soak", "seeds": {"replicates": 2}, "grid": {"optimizer.lr": [0.1, 0.05]},
            "imports": [gates.MODULE, diskfull.MODULE],
            "base": {"data": "digits", "model": {"name": "gated_mlp", "width": 32, "gate": str(gate)},
                     "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "epochs": epochs, "batch_size": 64,
                     "device": "cpu", "record": {"every_steps": 5, "checkpoints": {"every_epochs": 2, "final": True}}}}


# ---- the store, read directly (a damaged or half-written store shows as a failed check, not a crash)


def read_store(out: Path) -> dict:
    con = sqlite3.connect(f"file:{out / 'ablab.db'}?mode=ro", uri=True)
    try:
        runs = {r[0]: {"status": r[1], "finished": r[2], "attempts": r[3]}
                for r in con.execute("SELECT id, status, finished, attempts FROM runs")}
        metrics = con.execute("SELECT run, step, split, name, value FROM metrics").fetchall()
        artifacts = con.execute("SELECT run, name, size, sha256 FROM artifacts").fetchall()
    finally:
        con.close()
    return {"runs": runs, "metrics": metrics, "artifacts": artifacts}


def by_run(metrics: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for run, step, split, name, value in metrics:
        out.setdefault(run, []).append((step, split, name, value))
    return {run: sorted(rows) for run, rows in out.items()}


@dataclass
class Tally:
    cycles: int = 0
    rounds: int = 0
    kills: Counter = field(default_factory=Counter)
    missed: int = 0  # the study finished before the fault was delivered (or took effect)
    problems: Counter = field(default_factory=Counter)
    notes: list = field(default_factory=list)

    def flag(self, what: str, n: int, detail: str) -> None:
        if n:
            self.problems[what] += n
            self.notes.append(f"cycle {self.cycles}: {what}: {detail}")


def check(out: Path, reference: dict, before: dict, tally: Tally, finished: bool, clean: bool,
          disk_full: bool = False) -> dict:
    """The invariants after one invocation ended; returns the store's state for the next cycle."""
    if not (out / "ablab.db").exists():  # stopped before it wrote anything
        return before
    state = read_store(out)
    runs = state["runs"]
    if disk_full:  # the study's I/O failure, not the runs': none failed, no start counted
        charged = [r for r, v in runs.items() if v["status"] == "failed"
                   or (v["status"] == "pending" and v["attempts"] > before.get(r, {}).get("attempts", 0))]
        tally.flag("runs charged for a full disk", len(charged), str(charged))
    lost = [r for r, v in before.items() if v["status"] == "done" and runs.get(r, {}).get("status") != "done"]
    retrained = [r for r, v in before.items() if v["status"] == "done" and r not in lost
                 and runs[r]["finished"] != v["finished"]]
    tally.flag("runs lost", len(lost), str(lost))
    tally.flag("runs retrained", len(retrained), str(retrained))
    keys = Counter((run, step, split, name) for run, step, split, name, _ in state["metrics"])
    tally.flag("duplicated metric rows", sum(n - 1 for n in keys.values() if n > 1), "")
    indexed = set()
    for run, name, size, digest in state["artifacts"]:
        path = out / "runs" / run / name
        indexed.add(path)
        ok = path.is_file() and path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == digest
        tally.flag("artifacts lost or damaged", int(not ok), str(path))
    done_runs = {r for r, v in runs.items() if v["status"] == "done"}
    on_disk = {p for p in (out / "runs").glob("*/*") if p.is_file() and p.name != "spec.json"} if (out / "runs").exists() else set()
    stray = {p for p in on_disk - indexed if p.parent.name in done_runs and not p.name.startswith(".")}
    tally.flag("artifact files not in the index", len(stray), str(sorted(map(str, stray))[:3]))
    mine, ref = by_run(state["metrics"]), by_run(reference["metrics"])
    differ = [r for r in done_runs if mine.get(r) != ref.get(r)]
    tally.flag("runs not bitwise equal to the reference", len(differ), str(differ))
    if clean or finished:
        left = [r for r, v in runs.items() if v["status"] == "running"]
        tally.flag("runs left running", len(left), str(left))
    if finished:
        temps = [p for p in out.rglob(".*.tmp-*")]
        tally.flag("temporary files after a finished resume", len(temps), str(temps[:3]))
    return runs


# ---- one invocation, with or without a fault


def start(spec: Path, out: Path, logs: Path, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablab", "run", str(spec), "--out", str(out), "--workers", "2", "--threads", str(threads)]
    return subprocess.Popen(cmd, stdout=open(logs / "stdout", "ab"), stderr=open(logs / "stderr", "ab"),
                            start_new_session=True,  # its own process group: kill-group and Ctrl-C reach it all
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def runs_started_since(out: Path, since: float) -> int:
    """Runs this invocation marked running (rows a killed one left ``running`` are older)."""
    try:
        con = sqlite3.connect(f"file:{out / 'ablab.db'}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM runs WHERE status='running' AND started >= ?", (since,)).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def deliver(kind: str, proc: subprocess.Popen, workers: set[int], folder: Path) -> bool:
    """Send the fault (``workers``: the driver's worker processes now; ``folder``: the study's, where the disk
    fills); False when there was nothing to hit."""
    if kind == "kill-driver":
        os.kill(proc.pid, signal.SIGKILL)
    elif kind == "kill-group":
        os.killpg(proc.pid, signal.SIGKILL)
    elif kind == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole foreground group
    elif kind == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)
    elif kind == "disk-full":
        diskfull.fill(folder)
    else:
        if not workers:
            return False
        os.kill(random.choice(sorted(workers)), signal.SIGKILL)
    return True


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _tail(path: Path, start: int, lines: int = 12) -> str:
    """The last ``lines`` lines that ``path`` gained after byte ``start``."""
    with open(path, "rb") as f:
        f.seek(start)
        return " | ".join(f.read().decode(errors="replace").strip().splitlines()[-lines:])


def _finished(out: Path) -> bool:
    return (out / "ablab.db").exists() and all(v["status"] == "done" for v in read_store(out)["runs"].values())


def invoke(spec: Path, out: Path, logs: Path, kind: str | None, rng: random.Random, threads: int, gate: Path,
           epochs: int, timeout: float = 600) -> tuple:
    """Run ``ablab run`` once; with ``kind``, its runs hold at a random training step and the fault strikes
    while one holds (then the gate opens). Returns (exit code, whether the fault was delivered, pid -> start
    time of the processes seen under the driver)."""
    if kind:
        gates.close_gate(gate, at=rng.randrange(MIN_STEPS_PER_EPOCH * epochs))
    else:
        gates.open_gate(gate)
    t0 = time.time()
    proc, seen, delivered = start(spec, out, logs, threads), {}, False
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            below = procnet.descendants(proc.pid)  # workers: with 2 threads the forkserver's children
            seen.update({pid: procnet.started(pid) for pid in below - set(seen)})
            if kind and not delivered:
                held = set(gates.waiting(gate)) & below  # mid-run, in a worker of this driver
                if held and runs_started_since(out, t0) > 0:
                    delivered = deliver(kind, proc, held, spec.parent)
                    gates.open_gate(gate)
            time.sleep(0.05)
    finally:
        gates.open_gate(gate)
        diskfull.free(spec.parent)  # the space is freed once the invocation ended
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(), delivered, seen


def store_files(out: Path) -> dict[str, bytes]:
    """The store's files (the database and its -wal/-shm), byte for byte: a user's copy of it."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("ablab.db*")) if p.is_file()}


def damage(kind: str, out: Path) -> None:
    """Damage the store of an ended invocation: its metrics table dropped, or the file cut short (its -wal lost)."""
    db = out / "ablab.db"
    if kind == "drop-table":
        con = sqlite3.connect(db)
        con.execute("DROP TABLE metrics")
        con.commit()
        con.close()
    else:
        for side in out.glob("ablab.db-*"):
            side.unlink()
        db.write_bytes(db.read_bytes()[: 2 * 4096])


def invoke_on_damage(kind: str, spec: Path, out: Path, logs: Path, rng: random.Random, threads: int, gate: Path,
                     epochs: int, tally: Tally) -> tuple:
    """Copy the store, damage it, run the study on it (it must refuse, changing nothing), put the copy back.
    Returns what ``invoke`` does."""
    backup = store_files(out)
    damage(kind, out)
    damaged = store_files(out)
    code, _, seen = invoke(spec, out, logs, None, rng, threads, gate, epochs)
    tally.flag("damaged store changed", int(store_files(out) != damaged), kind)
    for name in set(store_files(out)) - set(backup):
        (out / name).unlink()
    for name, data in backup.items():
        (out / name).write_bytes(data)
    return code, True, seen


def orphans(seen: dict[int, int | None], grace_s: float = 30.0) -> list[str]:
    """Processes of an ended invocation still alive after ``grace_s`` (``pid name``); they are then killed.

    30 s as in the tests' own process checks: on a 2-core machine at load 12 the driver's SIGTERM, the
    workers' exit, then the forkserver's and the resource tracker's once took more than the 5 s this
    allowed (one orphan after a SIGTERM with 2 threads, in 1 of 3 soak runs)."""
    left = procnet.wait_gone(seen, grace_s)
    names = [f"{pid} {procnet.comm(pid)}" for pid in sorted(left)]
    procnet.kill_left(left)
    return names


def campaign(kills: int, seed: int, work: Path, epochs: int = 6, kinds: list[str] | None = None,
             threads: int = 1) -> Tally:
    """``kills`` faults (random kinds, or ``kinds`` in order), resuming after each; the tally of every check."""
    rng = random.Random(seed)
    spec, gate = work / "soak.yaml", work / "gate"
    gates.install(work)
    diskfull.install(work)
    spec.write_text(yaml.safe_dump(study(gate, epochs)))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    code, _, seen = invoke(spec, work / "reference", logs, None, rng, threads, gate, epochs)
    assert code == 0, (logs / "stderr").read_text()[-2000:]
    reference = read_store(work / "reference")
    tally = Tally()
    out, before = work / "round0", {}
    plan = list(kinds) if kinds else [rng.choice(KINDS) for _ in range(kills)]
    for kind in plan:
        tally.cycles += 1
        target = out if (out / "ablab.db").exists() else work / f"round{tally.rounds - 1}"
        if kind in DAMAGE and target != out and (target / "ablab.db").exists():  # the round just finished
            code, _, seen = invoke_on_damage(kind, spec, target, logs, rng, threads, gate, epochs, tally)
            tally.kills[kind] += 1
            tally.flag("unexpected exit codes", int(code not in EXPECTED_EXIT[kind]), f"{kind}: {code}")
            finished = read_store(target)["runs"]
            resumed, _, seen_after = invoke(spec, target, logs, None, rng, threads, gate, epochs)
            left = orphans({**seen, **seen_after})
            tally.flag("orphan processes", len(left), ", ".join(left))
            tally.flag("unexpected exit codes", int(resumed != 0), f"resume after {kind}: {resumed}")
            check(target, reference, finished, tally, finished=True, clean=True)
            print(f"cycle {tally.cycles:>3}  {kind:<12} {'finished':<9} exit {code:>4}  then {resumed}", flush=True)
            continue
        if kind in DAMAGE:
            code, delivered, seen = (invoke_on_damage(kind, spec, out, logs, rng, threads, gate, epochs, tally)
                                     if target == out else (0, False, {}))
        else:
            mark = _size(logs / "stderr")
            code, delivered, seen = invoke(spec, out, logs, kind, rng, threads, gate, epochs)
            # an invocation the fault never reached must end as an uninterrupted one does (exit 0, or 1 only
            # where a run failed by itself: that is a defect to read about, so its stderr goes into the note)
            tally.flag("failed without a fault", int(not delivered and code != 0),
                       f"{kind} missed, exit {code}: {_tail(logs / 'stderr', mark)}")
        left = orphans(seen)
        tally.flag("orphan processes", len(left), ", ".join(left))
        if not delivered:
            tally.missed += 1
        else:
            tally.kills[kind] += 1
            tally.flag("unexpected exit codes", int(code not in EXPECTED_EXIT[kind]), f"{kind}: {code}")
        before = check(out, reference, before, tally, finished=code == 0, clean=kind in CLEAN_STOP,
                       disk_full=kind == "disk-full" and delivered)
        print(f"cycle {tally.cycles:>3}  {kind:<12} {'delivered' if delivered else 'missed':<9} exit {code:>4}  "
              f"done {sum(v['status'] == 'done' for v in before.values())}/4", flush=True)
        if not _finished(out):  # resume (no fault) until the study is finished: the end of a round
            continue
        tally.rounds += 1
        out, before = work / f"round{tally.rounds}", {}
    # the last round: resume it to the end
    while out.exists() and any(v["status"] != "done" for v in read_store(out)["runs"].values()):
        code, _, seen = invoke(spec, out, logs, None, rng, threads, gate, epochs)
        left = orphans(seen)
        tally.flag("orphan processes", len(left), ", ".join(left))
        tally.flag("unexpected exit codes", int(code not in (0, 1)), f"resume: {code}")
        before = check(out, reference, before, tally, finished=code == 0, clean=True)
        if code == 0:
            tally.rounds += 1
    return tally


def summary(tally: Tally, seconds: float) -> dict:
    return {"cycles": tally.cycles, "faults delivered": sum(tally.kills.values()), "by kind": dict(sorted(tally.kills.items())),
            "missed (study already finished)": tally.missed, "rounds finished": tally.rounds,
            "problems": dict(tally.problems), "wall_s": round(seconds, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=1, help="threads per run: 1 forks the workers, more start them "
                   "from a forkserver")
    p.add_argument("--quick", action="store_true", help="2 epochs per run: a smoke run")
    p.add_argument("--work", help="folder for the results (default: a temporary one, removed)")
    args = p.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        tally = campaign(args.kills, args.seed, work, epochs=2 if args.quick else args.epochs, threads=args.threads)
    result = summary(tally, time.time() - t0)
    print(json.dumps(result, indent=2))
    for note in tally.notes:
        print(note)
    return 0 if not tally.problems else 1


if __name__ == "__main__":
    from _harness import own_temp_folder

    with own_temp_folder():  # every temporary folder of this benchmark, removed when it ends
        sys.exit(main())
