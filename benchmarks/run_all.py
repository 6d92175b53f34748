"""Run every benchmark, each in a fresh process, then print one summary of all targets.

``make bench`` calls this. Options (``--threads N``, ``--quick``, ``--diagnose``) are passed to each
benchmark. A MISS is reported, not fatal; the exit status is non-zero only if a benchmark crashed.
``bench_gpu.py`` prints "no CUDA device: skipped" and reports no targets where CUDA is missing.
An entry without a target (``"target": null``, e.g. ``bench_artifacts.py``'s ratios) is listed as "reported".
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_loop.py", "bench_augment.py", "bench_mixing.py", "bench_probes.py", "bench_artifacts.py",
              "bench_executors.py", "bench_variability.py", "bench_tta.py", "bench_estimate.py", "bench_gpu.py",
              "bench_replicas.py", "bench_adversarial.py"]


def main() -> int:
    passthrough = sys.argv[1:]
    verdicts, crashed = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ablab-bench-") as tmp:
        for name in BENCHMARKS:
            summary = Path(tmp) / f"{name}.json"
            t0 = time.perf_counter()
            # output streams straight through; verdicts come back in a small JSON file
            proc = subprocess.run([sys.executable, str(HERE / name), *passthrough, "--summary-json", str(summary)])
            print(f"   ({name}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
            if proc.returncode != 0 or not summary.exists():
                crashed.append(f"{name} (exit status {proc.returncode})")
                continue
            verdicts += json.loads(summary.read_text())

    print("== summary: every target, measured in this run")
    width = max([len(v["what"]) for v in verdicts] + [6])
    bench_width = max([len(v["benchmark"]) for v in verdicts] + [14])
    for v in verdicts:
        target = "reported" if v["target"] is None else f"target <= {v['target']:.4g}  {v['result']}"
        print(f"   {v['benchmark']:<{bench_width}} {v['what']:<{width}}  {v['value']:9.3f} {v['unit']:<2}  {target}")
    for name in crashed:
        print(f"   CRASHED: {name}")
    passes, misses = (sum(v["result"] == r for v in verdicts) for r in ("PASS", "MISS"))
    print(f"   {passes} PASS, {misses} MISS, {len(verdicts) - passes - misses} reported, {len(crashed)} crashed; "
          f"{time.perf_counter() - started:.0f} s in all")
    return 1 if crashed else 0


if __name__ == "__main__":
    from _harness import own_temp_folder

    with own_temp_folder():  # every temporary folder of this benchmark, removed when it ends
        sys.exit(main())
