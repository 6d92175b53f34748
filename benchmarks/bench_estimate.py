"""ablab validate's cost estimate against the real wall time of shipped CPU studies (issue 21).

No target: the ratios are reported (the summary lists them as "reported"). The estimate is what
``ablab validate`` prints: the study's training steps × the step time ``ablab.step_time`` measures on
the first run (after its warm-up, until its time budget), with the range of its fastest and slowest
block. Then the study runs through ``ablab run`` (1 worker, the same threads, a fresh results
directory) and two clocks are compared with it: the whole command's wall time (validation, data,
evaluation and recording included: what a user waits for), and the sum of the runs' own stored
durations (each run's training and evaluation). The machine's load average before and after is
printed beside them: a busy machine moves both.

Studies (shipped, CPU, no download): studies/quickstart.yaml (12 runs × 30 epochs of an MLP on
digits) and studies/deepobs/cifar10_3c3d_cpu.yaml (3C3D on digits 3×32×32). ``--quick``: the
quickstart with 2 epochs and one replicate, to check that the script runs (numbers not meaningful).

Run: ``python benchmarks/bench_estimate.py [--threads N] [--quick]``. About 2 minutes on a quiet
2-core CPU; ``--quick`` about 20 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _harness import parse_args, print_table, setup
from ablab import step_time
from ablab.cli import main as ablab_main
from ablab.spec import expand, load_study
from ablab.store import Store
from ablab.validate import check_variants

STUDIES = Path(__file__).resolve().parents[1] / "studies"
FULL = [("quickstart.yaml", []), ("deepobs/cifar10_3c3d_cpu.yaml", [])]
QUICK = [("quickstart.yaml", ["epochs=2", "seeds.replicates=1"])]


def estimate(spec: Path, overrides: list[str], threads: int) -> tuple[int, step_time.StepTime]:
    """The study's training steps and the measured step time of its first run, as ``ablab validate`` gets them."""
    study = load_study(str(spec), overrides)
    variants = expand(study, file=str(spec))
    steps = check_variants(variants, file=str(spec), study=study).steps
    return sum(steps.values()), step_time.measure_step_seconds(variants[0].spec, threads=threads)


def real(spec: Path, overrides: list[str], threads: int) -> tuple[float, float]:
    """Wall time of ``ablab run`` on a fresh results directory, and the sum of its runs' stored durations."""
    tmp = Path(tempfile.mkdtemp(prefix="ablab-bench-estimate-"))
    try:
        args = ["run", str(spec), "--out", str(tmp / "r"), "--threads", str(threads)]
        for o in overrides:
            args += ["--set", o]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = ablab_main(args)
        wall = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"ablab run {spec} exited {code}")
        store = Store.open(tmp / "r", readonly=True)
        try:
            runs = store.runs()["duration_s"].sum()
        finally:
            store.close()
        return wall, float(runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup(args, "bench_estimate — ablab validate's cost estimate / the study's real time")
    rows, summary = [], []
    for name, overrides in QUICK if args.quick else FULL:
        spec = STUDIES / name
        load_before = _load()
        steps, t = estimate(spec, overrides, args.threads)
        wall, runs = real(spec, overrides, args.threads)
        est = steps * t.seconds
        label = name + (f" ({', '.join(overrides)})" if overrides else "")
        inside = "yes" if steps * t.low <= runs <= steps * t.high else "no"
        rows.append([label, f"{steps:,}", f"{t.seconds * 1e3:.3g}", f"{t.steps}", f"{est:.1f}",
                     f"{steps * t.low:.1f}-{steps * t.high:.1f}", f"{runs:.1f}", f"{wall:.1f}", f"{runs / est:.2f}",
                     f"{wall / est:.2f}", inside, f"{load_before} / {_load()}"])
        summary.append({"benchmark": "bench_estimate", "what": f"run wall / estimate, {name}", "value": wall / est,
                        "target": None, "unit": "x", "result": "report"})
    print_table("estimate = steps × measured ms/step (training only, as ablab validate prints it); runs = sum of the "
                "runs' stored durations;\n    wall = the whole ablab run command; ratios are real / estimate",
                ["study", "steps", "ms/step", "timed steps", "estimate s", "range s", "runs s", "wall s",
                 "runs / est", "wall / est", "runs in range", "load before / after"], rows)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
