"""BatchNorm dissection: the cost of recording probes (γ/β trajectories, ReLU sparsity) at k = 5.

Target (issue "BatchNorm dissection"): recording costs ≤ 5 % of training time at k = 5.

Method. The same spec trained with and without ``record.probes: [norm_params, relu_sparsity]``
(both every 5 steps), evaluation off. Per-step time = (T(N steps) − T(k steps)) / (N − k), so
set-up cancels and the end-of-run copy of the recorded values to the host is counted in
proportion. Cases alternate within rounds; the ratio is the median of per-round ratios.
Two models: an MLP with BatchNorm on digits (batch 64; small steps make the relative cost the
largest) and DeepOBS 3C3D with BatchNorm on digits resized to 3×32×32 (batch 128).

Run: ``python benchmarks/bench_probes.py [--threads N] [--quick]``. About a minute on 2 cores.
"""

from __future__ import annotations

from _harness import Verdict, measure_interleaved, median, median_ci, parse_args, print_table, setup, write_summary
from ablab.spec import RunSpec
from ablab.train.loop import train

PROBES = [{"name": "norm_params", "every_steps": 5}, {"name": "relu_sparsity", "every_steps": 5}]
CASES = {
    "mlp (128,128) + BN / digits, batch 64": dict(
        data="digits", model={"name": "mlp", "widths": [128, 128], "norm": "batchnorm"}, batch_size=64, n=(10, 150),
        quick=(2, 50)),
    "3c3d + BN / digits 3x32x32, batch 128": dict(
        data={"name": "digits", "size": 32, "channels": 3}, model={"name": "3c3d", "norm": "batchnorm"},
        batch_size=128, n=(5, 25), quick=(2, 10)),
}


def _spec(case: dict, steps: int, probes: list, device: str) -> RunSpec:
    return RunSpec.model_validate({
        "data": case["data"], "model": case["model"], "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "steps": steps, "batch_size": case["batch_size"], "device": device,
        "record": {"every_steps": 10**6, "eval_splits": [], "probes": probes},
    })


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = setup(args, 'bench_probes — issue "BatchNorm dissection": probe recording cost at k = 5')
    rows, verdicts = [], []
    for name, case in CASES.items():
        # --quick: enough steps between k and N that the difference outweighs the noise of a run's set-up
        # (k = 2, N = 10 gave the MLP, at under 1 ms a step, a negative per-step time once in CI)
        k, n = case["quick"] if args.quick else case["n"]
        specs = {f"{tag}{steps}": _spec(case, steps, probes, device.type)
                 for tag, probes in (("plain", []), ("probes", PROBES)) for steps in (k, n)}
        calls = {key: (lambda s=s: train(s)) for key, s in specs.items()}
        rounds = 3 if args.quick else (8 if "3c3d" in name else 20)
        t = measure_interleaved(calls, rounds=rounds, warmup=1, device=device)
        plain = [(a - b) / (n - k) for a, b in zip(t[f"plain{n}"], t[f"plain{k}"])]
        probed = [(a - b) / (n - k) for a, b in zip(t[f"probes{n}"], t[f"probes{k}"])]
        ratios = [p / q for p, q in zip(probed, plain)]
        ratio, (lo, hi) = median(ratios), median_ci(ratios)
        v = Verdict("bench_probes", f"probe cost, {name}", ratio, 1.05, "x")
        verdicts.append(v)
        rows.append([name, f"{k}/{n} x {rounds}", f"{median(probed) * 1e3:.3f}", f"{median(plain) * 1e3:.3f}",
                     f"{ratio:.3f}", f"{lo:.3f}-{hi:.3f}", "<= 1.05", v.result])
    print_table("step time with probes (norm_params + relu_sparsity every 5 steps) vs without",
                ["case", "k/N x rounds", "probes ms/step", "plain ms/step", "ratio", "95% CI", "target", "result"], rows)
    write_summary(args.summary_json, verdicts)


if __name__ == "__main__":
    main()
