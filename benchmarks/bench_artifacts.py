"""Artifacts: what checkpoints, stored predictions and post-hoc evaluation cost, against the training they add to.

No targets: every number is reported (the summary lists it as "reported"), as a ratio against
training measured in the same run, never as an absolute time.

Method. Every timed case is a whole study through ``ablab.execute.run_study`` (1 worker, the runs
train in this process) into a fresh temporary results directory, so a run's artifact files are
written by the loop into the staging folder, moved into place by the driver and indexed in the
store's transaction, as under ``ablab run``. Validation (``expand`` + ``check_variants``) happens
before the clock starts; the progress log goes to a buffer. Two clocks: wall time, and this
process's CPU time (with 1 worker the runs are this process). On a shared machine the CPU ratio is
the steadier; only the wall ratio includes waiting for the disk (the store fsyncs what it writes).

(1) Checkpoints: the same study with ``record.checkpoints: {every_epochs: 1, final: true}`` and
    without; (2) predictions: ``record.evaluators: [standard, {name: predictions, splits: [test],
    epochs: every}]`` (epoch 0 included) against ``[standard]``. Cases plain / checkpoints /
    predictions alternate within rounds (the order flips every round); ratio = median of the
    per-round ratios; per-file cost = median over rounds of (T(with) − T(plain)) / files written.
    Two studies: the default MLP on digits (a cheap epoch: the worst case) and DeepOBS 3C3D on
    digits resized to 3×16×16 (16, not 32, to keep a round under half a minute on 2 cores).
(3) Post-hoc evaluation: a source study of 100 one-epoch runs (MLP widths [16], digits, final
    checkpoint), then a post-hoc study over it (``members: single``, ``evaluators: [standard]`` on
    the test split); each round trains a fresh source and evaluates it (source first: the post-hoc
    study needs it); ratio = median of the per-round ratios post-hoc / source, run_study to
    run_study, and with validation included.

Run: ``python benchmarks/bench_artifacts.py [--threads N] [--quick]``. About 3 minutes on the shared
2-core CPU; ``--quick`` (smaller studies, one or two rounds) 25–40 s.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import median, median_ci, parse_args, print_table, setup

CHECKPOINTS = {"checkpoints": {"every_epochs": 1, "final": True}}
PREDICTIONS = {"evaluators": ["standard", {"name": "predictions", "splits": ["test"], "epochs": "every"}]}
VARIANTS = {"plain": {}, "checkpoints": CHECKPOINTS, "predictions": PREDICTIONS}
SGD = {"name": "sgd", "lr": 0.02, "momentum": 0.9}

# label: (base spec, (epochs, replicates, rounds) full, same --quick); default recording otherwise
CASES = {
    "mlp (128,128) / digits, batch 64": (
        {"data": "digits", "model": {"name": "mlp", "widths": [128, 128]}, "batch_size": 64}, (5, 2, 10), (2, 1, 2)),
    "3c3d / digits 3x16x16, batch 128": (
        {"data": {"name": "digits", "size": 16, "channels": 3}, "model": {"name": "3c3d"}, "batch_size": 128},
        (2, 1, 6), (1, 1, 1)),
}
POSTHOC_FULL, POSTHOC_QUICK = (100, 3), (20, 1)  # (source runs, rounds)
SOURCE_BASE = {"data": "digits", "model": {"name": "mlp", "widths": [16]},
               "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "epochs": 1, "batch_size": 128,
               "device": "cpu", "record": {"checkpoints": {"final": True}}}
POSTHOC_BASE = {"evaluators": ["standard"], "eval_splits": ["test"], "device": "cpu"}


class Prepared:
    """A validated study, its expanded runs and the validation time (expand + check_variants)."""

    def __init__(self, spec: dict[str, Any]):
        import ablab
        from ablab.spec import Study, expand
        from ablab.validate import check_variants

        t0 = time.perf_counter()
        self.study = Study.model_validate(spec)
        self.variants = expand(self.study, open_stored=ablab.load)
        check_variants(self.variants, file="bench")
        self.validate_s = time.perf_counter() - t0


def run_timed(prepared: Prepared, out: Path, threads: int) -> dict[str, Any]:
    """Seconds of one ``run_study`` into ``out`` (a fresh directory), wall and this process's CPU, and what the
    store then holds (1 worker: the runs train in this process, so its CPU time is theirs)."""
    from ablab.execute import run_study
    from ablab.store import Store

    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):  # the progress log
        summary = run_study(prepared.study, "bench", prepared.variants, out, workers=1, tty=False, threads=threads)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if summary.counts != {"done": len(prepared.variants)}:
        raise RuntimeError(f"{prepared.study.name}: runs ended {summary.counts}")
    store = Store.open(out, readonly=True)
    try:
        arts = store.artifacts()
        files = {kind: int((arts.kind == kind).sum()) for kind in ("checkpoint", "predictions")}
        return {"wall": wall, "cpu": cpu, "files": files, "bytes": int(arts["size"].sum()) if len(arts) else 0}
    finally:
        store.close()


def run_in_tmp(prepared: Prepared, threads: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="ablab-bench-art-")
    try:
        return run_timed(prepared, Path(tmp) / "results", threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def case_study(base: dict, epochs: int, replicates: int, record: dict) -> dict:
    run = {**copy.deepcopy(base), "optimizer": SGD, "epochs": epochs, "device": "cpu", "record": copy.deepcopy(record)}
    return {"name": "bench-artifacts", "base": run, "seeds": {"replicates": replicates}}


def measure_case(base: dict, epochs: int, replicates: int, rounds: int, warmup: bool, threads: int) -> dict:
    """Interleaved rounds of the study plain / with checkpoints / with predictions."""
    prepared = {name: Prepared(case_study(base, epochs, replicates, rec)) for name, rec in VARIANTS.items()}
    if warmup:
        for p in prepared.values():
            run_in_tmp(p, threads)
    results: dict[str, list[dict]] = {name: [] for name in prepared}
    names = list(prepared)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            results[name].append(run_in_tmp(prepared[name], threads))
    return results


def artifact_row(label: str, shape: str, plain: list[dict], with_: list[dict], kind: str) -> tuple[list[str], float]:
    files = with_[0]["files"][kind]
    row = [label, shape, str(files), f"{with_[0]['bytes'] / files / 1e6:.3f}"]
    for clock in ("wall", "cpu"):
        ratios = [w[clock] / p[clock] for w, p in zip(with_, plain)]
        per_file = [(w[clock] - p[clock]) / files for w, p in zip(with_, plain)]
        lo, hi = median_ci(ratios)
        row += [f"{median([p[clock] for p in plain]):.3f}", f"{median([w[clock] for w in with_]):.3f}",
                f"{median(per_file) * 1e3:.1f}", f"{median(ratios):.3f}", f"{lo:.3f}-{hi:.3f}"]
    return row, median([w["wall"] / p["wall"] for w, p in zip(with_, plain)])


def measure_posthoc(n_runs: int, rounds: int, threads: int) -> list[dict]:
    """Per round: train a fresh ``n_runs``-run source study, then evaluate its final checkpoints post hoc."""
    out = []
    for r in range(-1, rounds):  # round -1: 2 runs, untimed (first-use costs of the post-hoc path)
        n = 2 if r < 0 else n_runs
        tmp = Path(tempfile.mkdtemp(prefix="ablab-bench-art-"))
        try:
            source = Prepared({"name": "bench-source", "base": copy.deepcopy(SOURCE_BASE), "seeds": {"replicates": n}})
            src = run_timed(source, tmp / "source", threads)
            posthoc = Prepared({"name": "bench-posthoc", "members": "single", "base": copy.deepcopy(POSTHOC_BASE),
                                "source": {"study": str(tmp / "source"), "checkpoint": "final"}})
            if len(posthoc.variants) != n:
                raise RuntimeError(f"post-hoc study has {len(posthoc.variants)} units, expected {n}")
            ph = run_timed(posthoc, tmp / "posthoc", threads)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if r >= 0:
            out.append({"source": src["wall"], "source_cpu": src["cpu"], "source_validate": source.validate_s,
                        "posthoc": ph["wall"], "posthoc_cpu": ph["cpu"], "posthoc_validate": posthoc.validate_s})
    return out


def reported(what: str, value: float, unit: str) -> dict:
    """A summary entry without a target (run_all.py prints it as "reported")."""
    return {"benchmark": "bench_artifacts", "what": what, "value": value, "target": None, "unit": unit,
            "result": "report"}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup(args, "bench_artifacts — checkpoints, stored predictions and post-hoc evaluation vs training")
    # first-use costs of the process (imports, torch._dynamo in the first optimizer) go into no case
    run_in_tmp(Prepared(case_study(CASES[next(iter(CASES))][0], 1, 1, {})), args.threads)

    summary: list[dict] = []
    rows = {"checkpoint": [], "predictions": []}
    for label, (base, full, quick) in CASES.items():
        epochs, replicates, rounds = quick if args.quick else full
        res = measure_case(base, epochs, replicates, rounds, warmup=not args.quick, threads=args.threads)
        shape = f"{epochs} x {replicates} x {rounds}"
        for kind, name, what in (("checkpoint", "checkpoints", "checkpoints every epoch"),
                                 ("predictions", "predictions", "predictions (test) every epoch")):
            row, ratio = artifact_row(label, shape, res["plain"], res[name], kind)
            rows[kind].append(row)
            summary.append(reported(f"{what} / none, {label}", ratio, "x"))

    header = ["case", "epochs x runs x rounds", "files", "MB/file", "plain s", "with s", "ms/file", "ratio", "95% CI",
              "cpu plain s", "cpu with s", "cpu ms/file", "cpu ratio", "95% CI"]
    print("\nstudy time through run_study (1 worker, fresh results dir, default recording: standard on train/val/test "
          "every epoch),\n    wall and this process's CPU time; medians over interleaved rounds; ratio = median of "
          "per-round ratios with / plain;\n    ms/file = median of (with - plain) / files written per study")
    print_table("(1) record.checkpoints: {every_epochs: 1, final: true} vs none", header, rows["checkpoint"])
    print_table("(2) evaluators [standard, predictions on test, epochs: every] vs [standard]",
                header, rows["predictions"])

    n_runs, rounds = POSTHOC_QUICK if args.quick else POSTHOC_FULL
    ph = measure_posthoc(n_runs, rounds, args.threads)
    ratio = [p["posthoc"] / p["source"] for p in ph]
    ratio_cpu = [p["posthoc_cpu"] / p["source_cpu"] for p in ph]
    ratio_all = [(p["posthoc"] + p["posthoc_validate"]) / (p["source"] + p["source_validate"]) for p in ph]

    def ci(xs: list[float]) -> str:
        lo, hi = median_ci(xs)
        return f"{lo:.3f}-{hi:.3f}"

    def per(key: str) -> str:
        return f"{median([p[key] for p in ph]) / n_runs * 1e3:.1f}"

    table = [
        ["source study: train (run_study)", f"{median([p['source'] for p in ph]):.3f}", per("source"), "", ""],
        ["source study: validate (expand + check_variants)", f"{median([p['source_validate'] for p in ph]):.3f}",
         per("source_validate"), "", ""],
        ["post-hoc study: evaluate (run_study)", f"{median([p['posthoc'] for p in ph]):.3f}", per("posthoc"), "", ""],
        ["post-hoc study: validate (expand + check_variants)", f"{median([p['posthoc_validate'] for p in ph]):.3f}",
         per("posthoc_validate"), "", ""],
        ["post-hoc / source training, run_study", "", "", f"{median(ratio):.3f}", ci(ratio)],
        ["post-hoc / source training, run_study, CPU time", "", "", f"{median(ratio_cpu):.3f}", ci(ratio_cpu)],
        ["post-hoc / source training, validation included", "", "", f"{median(ratio_all):.3f}", ci(ratio_all)],
    ]
    print_table(f"(3) post-hoc evaluation of {n_runs} stored runs (members: single, standard on test, final "
                f"checkpoint)\n    vs training them (mlp [16] / digits, 1 epoch, final checkpoint); "
                f"{rounds} round(s), source then post-hoc; medians",
                ["quantity", "s", "ms/run", "ratio", "95% CI"], table)
    summary.append(reported(f"post-hoc evaluation / training, {n_runs} runs", median(ratio), "x"))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary))


if __name__ == "__main__":
    from _harness import own_temp_folder

    with own_temp_folder():  # every temporary folder of this benchmark, removed when it ends
        main()
