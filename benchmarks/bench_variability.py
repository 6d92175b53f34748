"""Variability metrics over R = 100 runs × 10,000 test examples × 10 logits (seed 002 Table 5.1 scale).

Target (issue 14): the five metrics of ``ablab.analysis.variability.variability`` (two SDs with
10,000-resample bootstrap errors, and the means over the 4,950 pairs of disagreement, Spearman ρ and
ensemble Δ with their jackknife errors) in under 10 s on 2 cores. Each part is timed on its own,
and the whole call; the median over rounds is printed. As a reference, the naive double loop over
pairs (scipy's ``spearmanr`` and numpy per pair) is timed on the first 40 pairs and scaled to 4,950.

Logits are synthetic: a shared "true" signal plus per-run noise, so predictions agree on ~90 % of
examples, as trained CIFAR-10 models do (ties and agreement patterns do not change the cost).

Run: ``python benchmarks/bench_variability.py [--quick]`` (``--quick``: R = 20, 2,000 examples).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import spearmanr

from _harness import Verdict, median, parse_args, print_table, setup, write_summary
from ablab.analysis import variability as v

TARGET_S = 10.0


def synthetic_logits(runs: int, examples: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[R, N, C] float32 logits around a shared signal, and labels [N]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, examples)
    signal = rng.normal(size=(examples, classes)) + 3.0 * np.eye(classes)[labels]
    noise = rng.normal(size=(runs, examples, classes))
    return (signal + 0.6 * noise).astype(np.float32), labels


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``; CPU time is this process's, every thread (steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _naive_pairs_per_second(logits: np.ndarray, labels: np.ndarray, pairs: int) -> float:
    """Seconds per pair of a plain double loop: disagreement, spearmanr and the ensemble accuracy."""
    todo = [(i, j) for i in range(len(logits)) for j in range(i + 1, len(logits))][:pairs]
    start = time.perf_counter()
    for i, j in todo:
        np.mean(logits[i].argmax(-1) != logits[j].argmax(-1))
        spearmanr(logits[i].ravel(), logits[j].ravel())
        np.mean(((logits[i] + logits[j]) / 2).argmax(-1) == labels)
    return (time.perf_counter() - start) / len(todo)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    setup(args, "variability metrics: R runs x N examples x C logits")
    runs, examples, classes = (20, 2_000, 10) if args.quick else (100, 10_000, 10)
    rounds = 1 if args.quick else 3
    logits, labels = synthetic_logits(runs, examples, classes)
    acc = v.accuracy_percent(logits, labels)
    parts = {
        "accuracy + CE per run": lambda: (v.accuracy_percent(logits, labels), v.cross_entropy(logits, labels)),
        "bootstrap SD error (10,000 resamples), one metric": lambda: v.bootstrap_sd_error(acc),
        "pairwise disagreement matrix": lambda: v.pair_disagreement(logits),
        "pairwise Spearman matrix": lambda: v.pair_spearman(logits),
        "pairwise ensemble delta matrix": lambda: v.pair_ensemble_delta(logits, labels),
        "whole variability() call": lambda: v.variability(logits, labels),
    }
    times = {name: [] for name in parts}
    for _ in range(rounds):
        for name, fn in parts.items():
            times[name].append(_timed(fn))
    wall = {name: median([w for w, _ in t]) for name, t in times.items()}
    cpu = {name: median([c for _, c in t]) for name, t in times.items()}
    pairs = runs * (runs - 1) // 2
    naive = _naive_pairs_per_second(logits, labels, 10 if args.quick else 40) * pairs
    whole = wall["whole variability() call"]
    rows = [[name, f"{wall[name]:.3f}", f"{cpu[name]:.3f}"] for name in parts]
    rows.append([f"naive double loop over the {pairs} pairs (extrapolated)", f"{naive:.1f}", ""])
    rows.append(["naive loop / whole call (wall)", f"{naive / whole:.0f}x", ""])
    print_table(f"R = {runs}, N = {examples}, C = {classes}; median of {rounds} round(s), seconds",
                ["part", "wall s", "CPU s"], rows)
    what = f"variability() over R={runs} x {examples} x {classes}"
    verdict = Verdict("bench_variability", what, whole, TARGET_S, "s")
    print(f"\n   whole call {whole:.2f} s wall ({cpu['whole variability() call']:.2f} s CPU), "
          f"target <= {TARGET_S:g} s: {verdict.result}")
    write_summary(args.summary_json, [verdict])


if __name__ == "__main__":
    main()
