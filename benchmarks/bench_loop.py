"""ablab core: the training loop's step time against a hand-written PyTorch loop, and the fixed cost per run.

Targets (issue 25, "The house"; issue "ablab core" had 1.05 × and 50 ms):
  (a) ablab step time ≤ 1.03 × a plain PyTorch loop on the same model and data, for
      - the default MLP on digits, batch 64, and
      - DeepOBS 3C3D on random 3×32×32 images, batch 128;
  (b) fixed cost of one run, from a validated RunSpec to a stored result, training steps
      excluded: ≤ 5 ms.

Method. (a) ablab's loop is timed as it really runs, through ``ablab.train.loop.train(spec)``
with evaluation off (``record.eval_splits: []``, ``record.every_steps`` beyond the run). Per-step
time is (T(N steps) − T(k steps)) / (N − k) with a small k: everything paid once per run (data,
model, optimizer, seeding, the first step's warm-up) is in both and cancels. (With k = N/2 this
is (T(2N) − T(N)) / N; a small k spends less time on the subtraction, so the same budget buys more
rounds.) The baseline is the loop anyone would write: the same model (ablab's constructor and
init), SGD with momentum, the same data tensors, ``randperm`` shuffling, index slicing,
``zero_grad``/``backward``/``step``, no ``loss.item()`` per step; it is timed the same way. The
four timings alternate within each round (the order flips every round); the ratio is the median
of the per-round ratios, the times are medians over rounds.
(b) ``mark_running`` + ``train(spec)`` with ``steps: 1`` + ``Store.record`` into a temporary
store, minus one step as measured in (a); the set-up phases are timed apart for the breakdown.
(c) What ``keep_freed_memory`` (``ablab.train.compute``; every ablab process and this harness set it)
is worth: ablab's per-step time as in (a), and a whole run of N steps from its spec (set-up included)
divided by N with its minor page faults and system time, each measured in a fresh child process with the C library's default allocator settings (``ABLAB_MALLOC=system``) and with
ablab's, alternating over rounds; no target (both sides of (a) run with the same setting).

Run: ``python benchmarks/bench_loop.py [--threads N] [--quick]``. About 3 minutes on a 2-core CPU (part (c), 20 child processes, is half of it).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from _harness import (
    Verdict, measure_interleaved, median, median_ci, parse_args, print_table, rel_iqr, setup, sync, write_summary,
)
from ablab.data.base import Dataset, Split
from ablab.registry import DATASETS
from ablab.spec import RunSpec, Study, expand
from ablab.store import Store
from ablab.train.build import build_model, build_optimizer, load_run_data
from ablab.train.compute import MALLOC_ENV, keep_freed_memory
from ablab.train.loop import train

STEP_TARGET = 1.03  # ablab step / plain step
FIXED_TARGET_MS = 5.0
MOMENTUM = 0.9


# ---- a benchmark-only dataset: random images, generated once per process


@functools.lru_cache(maxsize=None)
def _random_images(n_train: int, n_eval: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))

    splits = {"train": split(n_train), "val": split(n_eval), "test": split(n_eval)}
    # uniform [0, 1) pixels: mean 1/2, std 1/√12 per channel
    return Dataset("bench_random32", splits, (3, 32, 32), 10, mean=(0.5,) * 3, std=(12 ** -0.5,) * 3).check()


if "bench_random32" not in DATASETS:

    @DATASETS.register("bench_random32")
    def bench_random32(n_train: int = 1024, n_eval: int = 256, seed: int = 0) -> Dataset:
        """Benchmark only: uniform random 3×32×32 images, random labels of 10 classes (cached)."""
        return _random_images(n_train, n_eval, seed)


# ---- the cases


@dataclass(frozen=True)
class Case:
    label: str
    data: dict
    model: dict
    batch_size: int
    lr: float
    short: int  # k: per-step time = (T(N steps) − T(k steps)) / (N − k)
    long: int  # N
    rounds: int


CASES = [
    # ~0.5 ms/step: short blocks, many rounds, so both sides see the same load on a shared machine
    Case("mlp (128,128) / digits, batch 64", {"name": "digits"}, {"name": "mlp"}, 64, 0.05, 2, 150, 60),
    # ~0.2 s/step; lr small enough that random labels never diverge (a diverged run stops early)
    Case("3c3d / random 3x32x32, batch 128", {"name": "bench_random32"}, {"name": "3c3d"}, 128, 0.002, 1, 6, 12),
]


# (c): a model whose step allocates blocks above glibc's first mmap threshold (128 KiB), and the MLP, whose do not
ALLOCATOR_CASES = [
    Case("one_hidden_conv + BN / digits, batch 32 (studies/nondeterminism/cpu.yaml)", {"name": "digits"},
         {"name": "one_hidden_conv", "norm": "batchnorm"}, 32, 0.05, 5, 200, 5),
    CASES[0],
]


ALLOCATOR_ROUNDS = 5


def create_spec(case: Case, steps: int, device: torch.device, deterministic: bool = True) -> RunSpec:
    return RunSpec.model_validate({
        "deterministic": deterministic,
        "data": case.data, "model": case.model,
        "optimizer": {"name": "sgd", "lr": case.lr, "momentum": MOMENTUM},
        "steps": steps, "batch_size": case.batch_size, "device": device.type,
        "record": {"every_steps": 10**9, "eval_splits": []},  # no evaluation, one metric read at the end
    })


def run_ablab(spec: RunSpec) -> None:
    result = train(spec, run_id="bench")
    if result.status != "done":
        raise RuntimeError(f"benchmark run ended '{result.status}': {result.error or result.metrics[-3:]}")


def run_plain(spec: RunSpec, data: Dataset, device: torch.device) -> None:
    """The hand-written baseline: same model and tensors, SGD momentum, randperm + index slicing."""
    model = build_model(spec, data).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.optimizer["lr"], momentum=MOMENTUM)
    x_all, y_all = data.splits["train"].x, data.splits["train"].y
    n, batch, step = len(x_all), spec.batch_size, 0
    while step < spec.steps:
        perm = torch.randperm(n, device=device)
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == spec.steps:
                break
    sync(device)


def plan_rounds(case: Case, quick: bool) -> tuple[int, int, int]:
    """(k, N, rounds) for this invocation."""
    # --quick: N − k steps enough to outweigh a run's set-up noise (the MLP's 8 steps of under 1 ms could come out
    # negative); the 3C3D case keeps its 6
    return (case.short, min(case.long, 50), 2) if quick else (case.short, case.long, case.rounds)


def per_step(at_k, at_n, k: int, n: int) -> list[float]:
    """(T(N) − T(k)) / (N − k) per measured quantity: what one more step costs, the run's set-up differenced away."""
    return [(b - a) / (n - k) for a, b in zip(at_k, at_n)]


def measure_step(case: Case, device: torch.device, quick: bool, diagnose: bool) -> dict[str, list[float]]:
    """Seconds per training step, one value per round: 'ablab', 'plain' (and 'nondet' to diagnose)."""
    k, n, rounds = plan_rounds(case, quick)
    short, long = create_spec(case, k, device), create_spec(case, n, device)
    data = load_run_data(short).to(device)
    cases = {
        "ablab k": lambda: run_ablab(short), "ablab N": lambda: run_ablab(long),
        "plain k": lambda: run_plain(short, data, device), "plain N": lambda: run_plain(long, data, device),
    }
    if diagnose:  # what `deterministic: true` costs: use_deterministic_algorithms, NaN-filled empties, no cudnn.benchmark
        nd_short, nd_long = create_spec(case, k, device, False), create_spec(case, n, device, False)
        cases |= {"nondet k": lambda: run_ablab(nd_short), "nondet N": lambda: run_ablab(nd_long)}
    for name in cases:  # warm-up: caches, allocator, first kernels
        if name.endswith(" N"):
            cases[name]()
    t = measure_interleaved(cases, rounds=rounds, warmup=0, device=device)
    sides = [name[:-2] for name in cases if name.endswith(" N")]
    return {side: per_step(t[f"{side} k"], t[f"{side} N"], k, n) for side in sides}


def measure_fixed_cost(case: Case, device: torch.device, quick: bool) -> dict[str, list[float]]:
    """Seconds per phase of one run with ``steps: 1``, from a validated RunSpec to a stored result."""
    raw = create_spec(case, 1, device).model_dump()
    with tempfile.TemporaryDirectory(prefix="ablab-bench-") as tmp:
        # the study's replicate seeds the run's streams: the base states none (a stated one conflicts with seeds.vary)
        base = {k: v for k, v in raw.items() if k != "seeds"}
        study = Study.model_validate({"name": "bench_fixed_cost", "base": base})
        variant = expand(study)[0]
        spec, run_id = variant.spec, variant.id
        store = Store.create(Path(tmp) / "results")
        store.sync_study(study, "bench_loop.py", [variant])
        state: dict = {"result": train(spec, run_id=run_id)}  # warm: dataset cache, code_version()

        def phase_data():
            state["data"] = load_run_data(spec).to(device)

        def phase_model():
            state["model"] = build_model(spec, state["data"]).to(device)

        def phase_train():
            state["result"] = train(spec, run_id=run_id)
            if state["result"].status != "done":
                raise RuntimeError(f"benchmark run ended '{state['result'].status}': {state['result'].error}")

        phase_data(), phase_model()
        phases = {
            "validate RunSpec": lambda: RunSpec.model_validate(raw),
            "data load (cached) + to(device)": phase_data,
            "model build (init stream) + to(device)": phase_model,
            "optimizer": lambda: build_optimizer(spec, state["model"]),
            "train(spec), steps=1": phase_train,
            "store.mark_running": lambda: store.mark_running(run_id),
            "store.record": lambda: store.record(state["result"]),
        }
        try:
            return measure_interleaved(phases, rounds=3 if quick else 25, warmup=2, device=device)
        finally:
            store.close()


def allocator_child(label: str, quick: bool) -> None:
    """(c), in a fresh process (setup() has applied or skipped the setting): per-step ms, faults and system ms."""
    case = next(c for c in ALLOCATOR_CASES if c.label == label)
    k, n, _ = plan_rounds(case, quick)
    short, long = create_spec(case, k, torch.device("cpu")), create_spec(case, n, torch.device("cpu"))
    run_ablab(long)  # warm-up: data cache, first kernels
    out = {}
    for name, spec in (("k", short), ("n", long)):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        run_ablab(spec)
        after = resource.getrusage(resource.RUSAGE_SELF)
        out[name] = (time.perf_counter() - start, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime)
    per = per_step(out["k"], out["n"], k, n)
    run = [v / n for v in out["n"]]  # the whole run of N steps, set-up included, per step
    print(json.dumps({"ms": 1e3 * per[0], "run_ms": 1e3 * run[0], "faults": run[1], "sys_ms": 1e3 * run[2]}))


def measure_allocator(args) -> list[list[str]]:
    """(c): each case's children, default settings and ablab's alternating, medians over rounds."""
    rows = []
    for case in ALLOCATOR_CASES:
        rounds = 2 if args.quick else ALLOCATOR_ROUNDS
        got: dict[str, list[dict]] = {"system": [], "ablab": []}
        for i in range(rounds):
            for mode in (("system", "ablab") if i % 2 == 0 else ("ablab", "system")):
                env = {**os.environ, MALLOC_ENV: "system" if mode == "system" else ""}
                cmd = [sys.executable, __file__, "--allocator-child", case.label, "--threads", str(args.threads)]
                proc = subprocess.run(cmd + (["--quick"] if args.quick else []), env=env, capture_output=True,
                                      text=True, check=True)
                got[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        m = {mode: {key: median([g[key] for g in got[mode]]) for key in got[mode][0]} for mode in got}
        speedup = {key: median([s[key] / a[key] for s, a in zip(got["system"], got["ablab"])]) for key in ("ms", "run_ms")}
        rows.append([case.label] + [f"{m[mode][key]:.3f}" if key != "faults" else f"{m[mode][key]:.1f}"
                                    for mode in ("system", "ablab") for key in ("ms", "run_ms", "faults", "sys_ms")]
                    + [f"{speedup['ms']:.2f}x", f"{speedup['run_ms']:.2f}x"])
    return rows


def _child_options(parser) -> None:
    parser.add_argument("--allocator-child", metavar="CASE", help="internal: one child of part (c)")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], _child_options)
    if args.allocator_child:
        torch.set_num_threads(args.threads)
        keep_freed_memory()  # a no-op under ABLAB_MALLOC=system
        allocator_child(args.allocator_child, args.quick)
        return
    device = setup(args, 'bench_loop — issues "ablab core" and 25: training-loop overhead and fixed cost per run')
    verdicts: list[Verdict] = []

    rows, step_ms = [], {}
    for case in CASES:
        per_step = measure_step(case, device, args.quick, args.diagnose)
        a, p = median(per_step["ablab"]), median(per_step["plain"])
        # each round's ablab and plain timings are adjacent in time: their ratio cancels drift
        ratios = [x / y for x, y in zip(per_step["ablab"], per_step["plain"])]
        ratio, (lo, hi) = median(ratios), median_ci(ratios)
        step_ms[case.label] = 1e3 * a
        v = Verdict("bench_loop", f"step ratio, {case.label}", ratio, STEP_TARGET, "x")
        verdicts.append(v)
        k, n, rounds = plan_rounds(case, args.quick)
        rows.append([case.label, f"{k}/{n} x {rounds}", f"{1e3 * a:.3f}", f"{1e3 * p:.3f}",
                     f"{rel_iqr(per_step['ablab']):.0%}/{rel_iqr(per_step['plain']):.0%}",
                     f"{ratio:.3f}", f"{lo:.3f}-{hi:.3f}", f"<= {STEP_TARGET:.2f}", v.result])
        if "nondet" in per_step:
            d = median(per_step["nondet"])
            nd_ratios = [x / y for x, y in zip(per_step["nondet"], per_step["plain"])]
            lo, hi = median_ci(nd_ratios)
            rows.append(["  same, ablab with deterministic: false", "", f"{1e3 * d:.3f}", "",
                         f"{rel_iqr(per_step['nondet']):.0%}", f"{median(nd_ratios):.3f}", f"{lo:.3f}-{hi:.3f}",
                         "info", ""])
    print_table(
        "(a) step time: ablab train(spec) vs hand-written PyTorch loop; per step = (T(N) - T(k)) / (N - k);\n"
        "    medians over rounds; ratio = median of the per-round ratios ablab/plain, with its ~95 % CI",
        ["case", "k/N x rounds", "ablab ms/step", "plain ms/step", "IQR a/p", "ratio", "95% CI", "target", "result"],
        rows,
    )

    case = CASES[0]
    phases = measure_fixed_cost(case, device, args.quick)
    ms = {name: 1e3 * median(ts) for name, ts in phases.items()}
    one_step = step_ms[case.label]
    setup_ms = ms["data load (cached) + to(device)"] + ms["model build (init stream) + to(device)"] + ms["optimizer"]
    fixed = ms["train(spec), steps=1"] - one_step + ms["store.mark_running"] + ms["store.record"]
    v = Verdict("bench_loop", "fixed cost per run (ms)", fixed, FIXED_TARGET_MS, "ms")
    verdicts.append(v)
    rows = [
        ["validate RunSpec (before the run; not counted)", f"{ms['validate RunSpec']:.2f}", ""],
        ["store.mark_running", f"{ms['store.mark_running']:.2f}", "counted"],
        ["train(spec), steps=1, eval_splits=[]", f"{ms['train(spec), steps=1']:.2f}", "counted"],
        ["  of which: data load (cached) + to(device)", f"{ms['data load (cached) + to(device)']:.2f}", "timed apart"],
        ["  of which: model build (init stream) + to(device)", f"{ms['model build (init stream) + to(device)']:.2f}", "timed apart"],
        ["  of which: optimizer", f"{ms['optimizer']:.2f}", "timed apart"],
        ["  of which: one training step (from (a))", f"{one_step:.2f}", "subtracted"],
        ["  rest: schedule, loss, seeds, first-step warm-up, result",
         f"{ms['train(spec), steps=1'] - setup_ms - one_step:.2f}", "derived"],
        ["store.record (spec.json fsync + metrics + status)", f"{ms['store.record']:.2f}", "counted"],
        ["fixed cost = mark_running + train - one step + record", f"{fixed:.2f}",
         f"target <= {FIXED_TARGET_MS:.0f} ms: {v.result}"],
    ]
    print_table(f"(b) fixed cost per run, {case.label}, median ms over rounds (store in a temp dir)",
                ["phase", "ms", "note"], rows)
    if device.type == "cpu":
        print_table("(c) the allocator: ablab's step in fresh processes, C library defaults (ABLAB_MALLOC=system) vs "
                    "keep_freed_memory; per step, medians over rounds; speed-up = median of per-round ratios",
                    ["case", "default: step ms", "run ms", "faults", "sys ms", "kept: step ms", "run ms", "faults",
                     "sys ms", "speed-up: step", "run"],
                    measure_allocator(args))
    write_summary(args.summary_json, verdicts)


if __name__ == "__main__":
    from _harness import own_temp_folder

    with own_temp_folder():  # every temporary folder of this benchmark, removed when it ends
        main()
