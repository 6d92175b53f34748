"""Packed replicas (issue 24): R seeds of a small model trained as one packed model, against R runs alone.

Targets (issue 24, "Performance"): per-model throughput packed vs sequential ≥ 5× for the MLP
64-128-128-10 on digits at batch 64 with R = 32 (CPU, 1 thread); on a GPU ≥ 10× (not measured
here when no GPU is lent).

Method. Four cases, each R models × N SGD steps (momentum 0.9), timed whole and interleaved over
rounds (the order flips every round):
  - ablab alone:   ``train(spec)`` for each of the R seeds (the loop as it runs, evaluation off);
  - ablab packed:  ``train_pack(specs)`` of the same R runs (bitwise the same numbers at 1 thread);
  - plain alone:   a hand-written PyTorch loop over R separate ``nn.Sequential`` MLPs;
  - plain packed:  a hand-written loop of one stacked MLP (``baddbmm``), the ceiling of packing.
The time per model-step is T / (R · N); ratios are medians of per-round ratios. Set-up (data,
models, optimizers) is inside every case, as a study pays it.
Also printed: what ``execute.pack: auto`` chooses for a few models and why, and the peak memory
(resident set, measured in a child process each) of one run alone and of a packed group.

Run: ``python benchmarks/bench_replicas.py [--threads N] [--quick]``. About 2 minutes on a 2-core CPU.
"""

from __future__ import annotations

import copy
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F

from _harness import Verdict, measure_interleaved, median, parse_args, print_table, rel_iqr, setup, write_summary
from ablab.execute.packing import auto_replicas
from ablab.spec import RunSpec
from ablab.train.build import load_run_data
from ablab.train.loop import train
from ablab.train.packed import packability, train_pack

SPEEDUP_TARGET = 5.0  # packed per-model throughput / sequential, CPU, MLP 64-128-128-10, batch 64, R = 32
BASE = {"data": "digits", "model": {"name": "mlp", "widths": [128, 128]},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "batch_size": 64, "device": "cpu",
        "record": {"every_steps": 10**9, "eval_splits": []}}


def specs(r: int, steps: int, device: str = "cpu") -> list[RunSpec]:
    return [RunSpec.model_validate({**copy.deepcopy(BASE), "steps": steps, "device": device, "replicate": i,
                                    "seeds": {"init": i, "shuffle": i, "augment": i, "stochastic": i}})
            for i in range(r)]


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
    "linear, batch 64": ("linear", 64),
}


def auto_rows(threads: int) -> list[list[str]]:
    rows = []
    for name, (model, batch) in AUTO_CASES.items():
        spec = RunSpec.model_validate({**copy.deepcopy(BASE), "model": model, "batch_size": batch, "steps": 1})
        facts = packability(spec)
        if facts.refusal is not None:
            rows.append([name, "-", "1", facts.refusal])
            continue
        r, why = auto_replicas(facts.parameters, batch, facts.device, threads)
        rows.append([name, f"{facts.parameters:,}", str(r), why or "packs"])
    return rows


def _resident_mib() -> float:
    """This process's resident set now (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(mode: str, r: int, steps: int) -> None:
    """Run in a child: the growth of the resident set while training (one run alone, or a pack), sampled every
    millisecond by a thread, over what the process held after a one-step run (imports, data)."""
    import threading
    import time

    train(specs(1, 1)[0])  # imports done on first use (torch._dynamo with the first optimizer) are not the run's
    before, peak, done = _resident_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_mib())
            time.sleep(0.001)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    if mode == "alone":
        train(specs(1, steps)[0])
    else:
        train_pack(specs(r, steps))
    done.set()
    watcher.join()
    print(max(peak[0], _resident_mib()) - before)


def peak_memory(r: int, steps: int) -> dict[str, float]:
    out = {}
    for mode in ("alone", "packed"):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(r), str(steps)],
                              capture_output=True, text=True, check=True)
        out[mode] = float(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        torch.set_num_threads(1)
        memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    args = parse_args(__doc__.splitlines()[0])
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
                ["model", "parameters", "R", "why"], auto_rows(args.threads))
    mem = peak_memory(r, steps)
    print_table("peak memory (resident set growth while training, MiB; Linux)", ["case", "MiB"],
                [["one run alone", f"{mem['alone']:.1f}"], [f"a packed group of {r}", f"{mem['packed']:.1f}"]])
    verdict = Verdict("bench_replicas", f"ablab packed / alone time per model-step, R={r} (≤ 1/{SPEEDUP_TARGET:g})",
                      1 / ratio["ablab speed-up (alone / packed)"], 1 / SPEEDUP_TARGET, "ratio")
    print(f"\n{verdict.result}: {verdict.what}: {verdict.value:.3f} (speed-up {1 / verdict.value:.2f}×)")
    write_summary(args.summary_json, [verdict])


if __name__ == "__main__":
    main()
