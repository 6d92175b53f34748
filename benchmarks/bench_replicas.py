"""Packed replicas (issue 24): R seeds of a small model trained as one packed model, against R runs alone.

Targets (issue 24, "Performance"): per-model throughput packed vs sequential ≥ 5× for the MLP
64-128-128-10 on digits at batch 64 with R = 32 (CPU, 1 thread), ≥ 2× for ``one_hidden_conv``
(64@5×5/2, BatchNorm) on 8×8 digits at batch 32 as in ``studies/nondeterminism/cpu.yaml``. The 16×16
conv at batch 64, where packing loses on the CPU, is measured beside it with what
``execute.pack: auto`` chose for it. Where a CUDA device is present the benchmark runs there and
takes the GPU targets: ≥ 10× for the same MLP and ≥ 3× for ``resnet6`` (BatchNorm) at batch 128 on
32×32×3 digits (CIFAR's shape), R = 16, with the 8×8 conv beside it (``scripts/gpu_check.sh`` runs
it). ``--quick`` on the CPU also runs the resnet6 case, small, so its code cannot break unnoticed.

Method. Four cases, each R models × N SGD steps (momentum 0.9), timed whole and interleaved over
rounds (the order flips every round):
  - ablab alone:   ``train(spec)`` for each of the R seeds (the loop as it runs, evaluation off);
  - ablab packed:  ``train_pack(specs)`` of the same R runs (bitwise the same numbers at 1 thread);
  - plain alone:   a hand-written PyTorch loop over R separate ``nn.Sequential`` MLPs;
  - plain packed:  a hand-written loop of one stacked MLP (``baddbmm``), the ceiling of packing.
The time per model-step is T / (R · N); ratios are medians of per-round ratios. Set-up (data,
models, optimizers) is inside every case, as a study pays it.
The convolutional cases time ablab alone against ablab packed only (interleaved rounds likewise).
Also printed: what ``execute.pack: auto`` chooses for a few models and why, and the peak memory
(resident set, measured in a child process each) of one run alone and of a packed group, for the
MLP and for the conv.

``--study``: ``studies/nondeterminism/cpu.yaml`` run twice through ``ablab run`` (``--threads 1``,
``--workers`` = the cores), ``execute.pack: off`` and ``auto``, each into a fresh directory with its
report: the wall-time ratio (target ≥ 2×) and the two variability tables side by side (they must be
equal: packed runs are bitwise the runs alone at one thread). The whole study costs about 9
run-minutes unpacked on the 2-core CPU; ``--study-set PATH=VALUE`` (repeatable, ``ablab run --set``)
and ``--study-replicates N`` shrink it, e.g. ``--study-set epochs=3 --study-replicates 4``;
``--study-rounds N`` repeats both runs N times in alternating order (medians printed), and
``--study-allocator`` runs each also with ``ABLAB_MALLOC=system`` (the C library's allocator defaults
instead of ``keep_freed_memory``), printing what keeping freed memory is worth for the study.

Run: ``python benchmarks/bench_replicas.py [--threads N] [--quick] [--study [--study-set PATH=VALUE]]``.
About 4 minutes on a 2-core CPU without ``--study``.
"""

from __future__ import annotations

import copy
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from _harness import Verdict, measure_interleaved, median, parse_args, print_table, rel_iqr, setup, write_summary
from ablab.execute.packing import auto_replicas
from ablab.train.compute import MALLOC_ENV
from ablab.spec import RunSpec
from ablab.train.build import load_run_data
from ablab.train.loop import train
from ablab.train.packed import packability, train_pack

SPEEDUP_TARGET = 5.0  # packed per-model throughput / sequential, CPU, MLP 64-128-128-10, batch 64, R = 32
GPU_SPEEDUP_TARGET = 10.0  # the same MLP on a GPU
CONV_TARGET = 2.0  # the same for one_hidden_conv on 8×8 digits at batch 32 (studies/nondeterminism/cpu.yaml)
GPU_CONV_TARGET = 3.0  # resnet6 at batch 128 on a GPU
STUDY_TARGET = 2.0  # wall time of studies/nondeterminism/cpu.yaml unpacked / packed
STUDY = Path(__file__).resolve().parent.parent / "studies" / "nondeterminism" / "cpu.yaml"
DIGITS16 = {"name": "digits", "size": 16, "channels": 1}
DIGITS32 = {"name": "digits", "size": 32, "channels": 3}  # CIFAR's shape
CONV_CASES = {  # name: (model, data, batch size, R (full run)); the first has the CPU target
    "one_hidden_conv 64@5x5/2 + BN on 8x8 digits, batch 32": (
        {"name": "one_hidden_conv", "norm": "batchnorm"}, "digits", 32, 16),
    "one_hidden_conv 64@5x5/2 on 16x16 digits, batch 64": ({"name": "one_hidden_conv"}, DIGITS16, 64, 16),
}
GPU_CONV_CASES = {  # on a GPU, the first has the GPU target; the CPU's first case is measured beside it
    "resnet6 + BN on 32x32x3 digits, batch 128": ({"name": "resnet6"}, DIGITS32, 128, 16),
    **dict(list(CONV_CASES.items())[:1]),
}
BASE = {"data": "digits", "model": {"name": "mlp", "widths": [128, 128]},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "batch_size": 64, "device": "cpu",
        "record": {"every_steps": 10**9, "eval_splits": []}}


def specs(r: int, steps: int, device: str = "cpu", **changes) -> list[RunSpec]:
    return [RunSpec.model_validate({**copy.deepcopy(BASE), **changes, "steps": steps, "device": device,
                                    "replicate": i, "seeds": {"init": i, "shuffle": i, "augment": i, "stochastic": i}})
            for i in range(r)]


def conv_specs(name: str, r: int, steps: int, device: str = "cpu") -> list[RunSpec]:
    model, data, batch, _ = {**CONV_CASES, **GPU_CONV_CASES}[name]
    return specs(r, steps, device, model=model, data=data, batch_size=batch)


def case_specs(case: str, r: int, steps: int, device: str = "cpu") -> list[RunSpec]:
    """``case`` is "mlp" (the MLP of ``BASE``) or the name of a convolutional case."""
    return specs(r, steps, device) if case == "mlp" else conv_specs(case, r, steps, device)


# ---- the hand-written baselines


def _data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    train_split = load_run_data(specs(1, 1)[0]).splits["train"]
    return train_split.x.flatten(1).float().to(device), train_split.y.to(device)


def plain_alone(r: int, steps: int, device: torch.device) -> None:
    """R plain PyTorch runs one after another: nn.Sequential MLP, SGD, randperm batches."""
    x, y = _data(device)
    for i in range(r):
        torch.manual_seed(i)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                    torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        perm = torch.randperm(len(x), device=device)
        for s in range(steps):
            idx = perm[(s * 64) % (len(x) - 64):][:64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def plain_packed(r: int, steps: int, device: torch.device) -> None:
    """The same R runs as one stacked model: baddbmm layers, one SGD over [R, out, in] tensors."""
    x, y = _data(device)
    sizes = [64, 128, 128, 10]
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [(torch.randn(r, b, a, device=device) / a ** 0.5).requires_grad_(),
                   torch.zeros(r, b, device=device, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    perms = torch.stack([torch.randperm(len(x), device=device) for _ in range(r)])
    for s in range(steps):
        idx = perms[:, (s * 64) % (len(x) - 64):][:, :64]
        h = x[idx]
        for k in range(3):
            h = torch.baddbmm(params[2 * k + 1].unsqueeze(1), h, params[2 * k].transpose(1, 2))
            if k < 2:
                h = torch.relu(h)
        loss = F.cross_entropy(h.reshape(-1, 10), y[idx].reshape(-1)) * r
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ---- auto's choices and peak memory


AUTO_CASES = {
    "mlp 64-128-128-10, batch 64": ({"name": "mlp", "widths": [128, 128]}, 64),
    "mlp 64-1024-1024-10, batch 128": ({"name": "mlp", "widths": [1024, 1024]}, 128),
    "one_hidden_conv 64@5x5/2, batch 32": ({"name": "one_hidden_conv"}, 32),
    "one_hidden_conv 64@5x5/2 on 16x16, batch 64": ({"name": "one_hidden_conv"}, 64, DIGITS16),
    "resnet6, batch 64": ({"name": "resnet6"}, 64),
    "linear, batch 64": ("linear", 64),
}


def auto_rows(threads: int) -> list[list[str]]:
    rows = []
    for name, (model, batch, *data) in AUTO_CASES.items():
        spec = RunSpec.model_validate({**copy.deepcopy(BASE), "model": model, "batch_size": batch, "steps": 1,
                                       "data": data[0] if data else BASE["data"]})
        rows.append([name, *auto_choice(spec, threads)])
    return rows


def auto_choice(spec: RunSpec, threads: int) -> list[str]:
    """[parameters, multiply-adds per example, R, why] as ``execute.pack: auto`` decides for ``spec``."""
    facts = packability(spec)
    if facts.refusal is not None:
        return ["-", "-", "1", facts.refusal]
    r, why = auto_replicas(facts.parameters, spec.batch_size, facts.device, threads, facts.conv_macs)
    return [f"{facts.parameters:,}", f"{facts.conv_macs:,}" if facts.conv_macs else "-", str(r), why or "packs"]


def _resident_mib() -> float:
    """This process's resident set now (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(mode: str, r: int, steps: int, case: str = "mlp") -> None:
    """Run in a child: the growth of the resident set while training (one run alone, or a pack), sampled every
    millisecond by a thread, over what the process held after a one-step run (imports, data)."""
    import threading
    import time

    train(case_specs(case, 1, 1)[0])  # imports done on first use (torch._dynamo with the first optimizer) are not the run's
    before, peak, done = _resident_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_mib())
            time.sleep(0.001)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    if mode == "alone":
        train(case_specs(case, 1, steps)[0])
    else:
        train_pack(case_specs(case, r, steps))
    done.set()
    watcher.join()
    print(max(peak[0], _resident_mib()) - before)


def peak_memory(r: int, steps: int, case: str = "mlp") -> dict[str, float]:
    out = {}
    for mode in ("alone", "packed"):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(r), str(steps), case],
                              capture_output=True, text=True, check=True)
        out[mode] = float(proc.stdout.strip().splitlines()[-1])
    return out


def gpu_peak_memory(r: int, steps: int, case: str = "mlp") -> dict[str, float]:
    """On CUDA, in this process: the peak of allocated device memory over what was allocated before, MiB, for one
    run alone and for a packed group of ``r`` (the resident set of the host says little there)."""
    out = {}
    for mode in ("alone", "packed"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        if mode == "alone":
            train(case_specs(case, 1, steps, "cuda")[0])
        else:
            train_pack(case_specs(case, r, steps, "cuda"))
        torch.cuda.synchronize()
        out[mode] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        torch.set_num_threads(1)
        memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    args = parse_args(__doc__.splitlines()[0], _study_options)
    device = setup(args, "packed replicas: R seeds of a small model in one process (issue 24)")
    r, steps, rounds = (4, 5, 2) if args.quick else (32, 60, 5)
    dev = str(device)
    cases = {
        "ablab alone": lambda: [train(s) for s in specs(r, steps, dev)],
        "ablab packed": lambda: train_pack(specs(r, steps, dev)),
        "plain alone": lambda: plain_alone(r, steps, device),
        "plain packed": lambda: plain_packed(r, steps, device),
    }
    times = measure_interleaved(cases, rounds=rounds, warmup=1, device=device)
    per = {k: median(v) / (r * steps) * 1e3 for k, v in times.items()}
    ratio = {
        "ablab speed-up (alone / packed)": median([a / p for a, p in zip(times["ablab alone"], times["ablab packed"])]),
        "plain speed-up (alone / packed)": median([a / p for a, p in zip(times["plain alone"], times["plain packed"])]),
        "ablab packed / plain packed": median([a / p for a, p in zip(times["ablab packed"], times["plain packed"])]),
        "ablab alone / plain alone": median([a / p for a, p in zip(times["ablab alone"], times["plain alone"])]),
    }
    print_table(f"MLP 64-128-128-10 on digits, batch 64, R = {r}, {steps} SGD steps per model ({rounds} rounds)",
                ["case", "ms per model-step", "spread (IQR/median)"],
                [[k, f"{per[k]:.3f}", f"{rel_iqr(times[k]):.2f}"] for k in cases])
    print_table("ratios (medians of per-round ratios)", ["ratio", "value"], [[k, f"{v:.2f}"] for k, v in ratio.items()])
    print_table(f"what execute.pack: auto chooses ({args.threads} thread(s) per run)",
                ["model", "parameters", "multiply-adds per example", "R", "why"], auto_rows(args.threads))
    conv_name = next(iter(CONV_CASES))
    conv_r = 4 if args.quick else CONV_CASES[conv_name][3]
    mem = peak_memory(r, steps)
    conv_mem = peak_memory(conv_r, steps, conv_name)
    print_table("peak memory (resident set growth while training, MiB; Linux)", ["case", "MiB"],
                [["one run alone", f"{mem['alone']:.1f}"], [f"a packed group of {r}", f"{mem['packed']:.1f}"],
                 ["one_hidden_conv: one run alone", f"{conv_mem['alone']:.1f}"],
                 [f"one_hidden_conv: a packed group of {conv_r}", f"{conv_mem['packed']:.1f}"]])
    gpu = device.type == "cuda"
    if gpu:
        gpu_case = next(iter(GPU_CONV_CASES))
        gpu_r = 4 if args.quick else GPU_CONV_CASES[gpu_case][3]
        gmem, gconv = gpu_peak_memory(r, steps), gpu_peak_memory(gpu_r, steps, gpu_case)
        print_table("peak GPU memory (allocated while training, over what was allocated before, MiB)", ["case", "MiB"],
                    [["MLP: one run alone", f"{gmem['alone']:.1f}"], [f"MLP: a packed group of {r}", f"{gmem['packed']:.1f}"],
                     [f"{gpu_case}: one run alone", f"{gconv['alone']:.1f}"],
                     [f"{gpu_case}: a packed group of {gpu_r}", f"{gconv['packed']:.1f}"]])
    mlp_target, conv_target = (GPU_SPEEDUP_TARGET, GPU_CONV_TARGET) if gpu else (SPEEDUP_TARGET, CONV_TARGET)
    conv_speedup = conv_cases(args, dev, device, GPU_CONV_CASES if gpu else CONV_CASES)
    where = "GPU" if gpu else "CPU"
    verdicts = [
        Verdict("bench_replicas", f"MLP on {where}: ablab packed / alone time per model-step, R={r} "
                f"(≤ 1/{mlp_target:g})", 1 / ratio["ablab speed-up (alone / packed)"], 1 / mlp_target, "ratio"),
        Verdict("bench_replicas", f"{'resnet6, batch 128' if gpu else 'one_hidden_conv on digits'} on {where}: "
                f"packed / alone time per model-step (≤ 1/{conv_target:g})", 1 / conv_speedup, 1 / conv_target, "ratio")]
    if args.quick and not gpu:  # the GPU's cases run here too, so their code cannot break unnoticed
        conv_cases(args, dev, device, dict(list(GPU_CONV_CASES.items())[:1]), title="the GPU target's case, ",
                   quick=(2, 2))
    if args.study:
        verdicts.append(study_comparison(args))
    for verdict in verdicts:
        print(f"\n{verdict.result}: {verdict.what}: {verdict.value:.3f} (speed-up {1 / verdict.value:.2f}×)")
    write_summary(args.summary_json, verdicts)


def conv_cases(args, dev: str, device: torch.device, conv: dict, title: str = "", quick: tuple[int, int] = (4, 5)
               ) -> float:
    """ablab alone against ablab packed for each case of ``conv``, with auto's choice; the first case's speed-up.
    ``quick``: (R, steps) under ``--quick``."""
    steps, rounds = (quick[1], 2) if args.quick else (40, 3)
    rows, speedups = [], []
    for name, (_, _, _, full_r) in conv.items():
        r = quick[0] if args.quick else full_r
        cases = {"alone": lambda: [train(s) for s in conv_specs(name, r, steps, dev)],
                 "packed": lambda: train_pack(conv_specs(name, r, steps, dev))}
        times = measure_interleaved(cases, rounds=rounds, warmup=1, device=device)
        speedup = median([a / p for a, p in zip(times["alone"], times["packed"])])
        speedups.append(speedup)
        choice = auto_choice(conv_specs(name, 1, 1, dev)[0], args.threads)
        rows.append([name, str(r), f"{median(times['alone']) / (r * steps) * 1e3:.3f}",
                     f"{median(times['packed']) / (r * steps) * 1e3:.3f}", f"{speedup:.2f}",
                     f"R = {choice[2]}" + (f" ({choice[3]})" if choice[2] == "1" else "")])
    print_table(f"{title}convolutional: ablab alone vs packed (explicit R), {steps} SGD steps per model, {rounds} rounds, "
                f"{args.threads} thread(s); the last column: what execute.pack: auto chose",
                ["case", "R", "alone ms/model-step", "packed ms/model-step", "speed-up", "auto"], rows)
    return speedups[0]


# ---- the nondeterminism study with and without packing


def _study_options(parser) -> None:
    parser.add_argument("--study", action="store_true",
                        help="also run studies/nondeterminism/cpu.yaml with execute.pack off and auto (minutes)")
    parser.add_argument("--study-set", action="append", default=[], metavar="PATH=VALUE",
                        help="an override of the study's base for both runs (ablab run --set), e.g. epochs=3")
    parser.add_argument("--study-replicates", type=int, help="runs per row instead of the study's 16")
    parser.add_argument("--study-rounds", type=int, default=1, help="each study run this many times (alternating)")
    parser.add_argument("--study-allocator", action="store_true",
                        help="also run each with the C library's allocator defaults (ABLAB_MALLOC=system)")


def study_comparison(args) -> Verdict:
    """The study run unpacked and packed (fresh directories, reports included), ``--study-rounds`` times in
    alternating order: median wall times and the variability tables (of the first round). With
    ``--study-allocator`` each is also run with ``ABLAB_MALLOC=system`` (the C library's allocator defaults,
    ``ablab.train.compute.keep_freed_memory`` off), the rest of the round unchanged."""
    workers = max(1, os.cpu_count() or 1)
    cases = [(pack, alloc) for pack in ("off", "auto") for alloc in (("kept", "system") if args.study_allocator else ("kept",))]
    walls: dict[tuple, list[float]] = {c: [] for c in cases}
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.study_rounds):
            for pack, alloc in (cases if i % 2 == 0 else cases[::-1]):
                out, path = Path(tmp) / f"{pack}-{alloc}-{i}", Path(tmp) / f"{pack}.yaml"
                path.write_text(_study_text(pack, args.study_replicates))
                cmd = [sys.executable, "-m", "ablab", "run", str(path), "--out", str(out), "--threads", "1",
                       "--workers", str(workers), "--report"]
                for item in args.study_set:
                    cmd += ["--set", item]
                env = {**os.environ, MALLOC_ENV: "system" if alloc == "system" else ""}
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                walls[pack, alloc].append(time.perf_counter() - start)
                if proc.returncode != 0:
                    raise SystemExit(f"error: {path}: ablab run failed with execute.pack {pack}:\n{proc.stderr[-2000:]}")
                plan = [line for line in proc.stderr.splitlines() if "packing:" in line]
                print(f"\nround {i + 1}: execute.pack: {pack}, allocator {alloc}: {walls[pack, alloc][-1]:.1f} s wall "
                      f"({workers} workers, 1 thread each)" + (f"; {plan[0].strip()}" if plan and i == 0 else ""))
                tables.setdefault(pack, (out / "report" / "tables" / "variability.csv").read_text().splitlines())
            shutil.rmtree(Path(tmp), ignore_errors=True)
            Path(tmp).mkdir(exist_ok=True)
    _side_by_side(tables["off"], tables["auto"])
    rows = [[pack, alloc, f"{median(walls[pack, alloc]):.1f}", " ".join(f"{w:.1f}" for w in walls[pack, alloc])]
            for pack, alloc in cases]
    print_table(f"study wall time, s ({args.study_rounds} round(s), order alternating)",
                ["execute.pack", "allocator", "median", "rounds"], rows)
    ratio = median([a / b for a, b in zip(walls["off", "kept"], walls["auto", "kept"])])
    if args.study_allocator:
        for pack in ("off", "auto"):
            gain = median([a / b for a, b in zip(walls[pack, "system"], walls[pack, "kept"])])
            print(f"allocator, execute.pack {pack}: C library defaults / keep_freed_memory = {gain:.2f}× "
                  f"(median of per-round ratios)")
    same = tables["off"] == tables["auto"]
    print(f"wall-time ratio unpacked / packed: {ratio:.2f}×; variability tables {'identical' if same else 'DIFFER'}")
    return Verdict("bench_replicas", f"nondeterminism/cpu.yaml packed / unpacked wall time (≤ 1/{STUDY_TARGET:g})",
                   1 / ratio, 1 / STUDY_TARGET, "ratio")


def _study_text(pack: str, replicates: Optional[int]) -> str:
    """The study's YAML with ``execute.pack`` (and the replicates per row, when given) set."""
    import yaml

    data = yaml.safe_load(STUDY.read_text())
    data["execute"] = {**data.get("execute", {}), "pack": pack}
    if replicates:
        data["seeds"] = {**data["seeds"], "replicates": replicates}
    return yaml.safe_dump(data, sort_keys=False)


def _side_by_side(off: list[str], auto: list[str]) -> None:
    """The variability CSVs' main columns, unpacked beside packed."""
    import csv

    keep = ("variant", "n", "acc_mean", "acc_sd", "loss_sd", "disagreement", "spearman", "ensemble_delta")
    a, b = list(csv.DictReader(off)), list(csv.DictReader(auto))
    cols = [c for c in keep if a and c in a[0]]
    rows = [[x.get("variant", "")] + [f"{x[c]} | {y[c]}" for c in cols[1:]] for x, y in zip(a, b)]
    print_table("variability (report tables/variability.csv): unpacked | packed", cols, rows)


if __name__ == "__main__":
    main()
