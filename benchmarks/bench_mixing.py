"""issue 15: the cost of each mixed-example augmentation against one pre-act ResNet-18 training step.

Target (issue 15): every one of the 16 methods (and the baseline arm) on a 128×3×32×32 batch costs
≤ 10 % of one pre-act ResNet-18 training step (batch 128) on the CPU, ≤ 5 % on CUDA, same device,
same process. The method alone is timed (the crop and flip before it are ``bench_augment.py``'s).

Methods come from ``AUGMENTATIONS.create`` with a CIFAR-shaped ``Dataset`` and their default
parameters; the step is ablab's ``standard`` objective step (forward, soft-label cross-entropy on the mixed
batch's labels, backward, SGD momentum). Each round times the step once and every method
``MIX_CALLS`` times (one call is too short to time alone on a busy CPU); the ratio per method is
the median over rounds of (method time / step time) of the same round.

Run: ``python benchmarks/bench_mixing.py [--threads N] [--quick]``. About 2 min on a 2-core CPU
(the ResNet step is ~1-3 s there); ``--quick`` 3 rounds.
"""

from __future__ import annotations

import torch

from _harness import Verdict, measure_interleaved, median, median_ci, parse_args, print_table, rel_iqr, setup, write_summary
from ablab.data.base import Dataset
from ablab.data.mixing import METHODS
from ablab.registry import AUGMENTATIONS, LOSSES, MODELS
from ablab.train.objectives import StandardStep, StepSetup

TARGET = {"cpu": 0.10, "cuda": 0.05}  # method time / training step time
BATCH = 128
MIX_CALLS = 10


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = setup(args, "bench_mixing — issue 15: mixing cost per batch / pre-act ResNet-18 training step")
    dataset = Dataset("cifar_like", {}, (3, 32, 32), 10)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(BATCH, 3, 32, 32, device=device, generator=gen)
    y = torch.randint(0, 10, (BATCH,), device=device, generator=gen)
    mixes = {name: AUGMENTATIONS.create(name, dataset=dataset) for name in METHODS}
    _, soft = mixes["vh_mixup"](x, y, gen)

    model = MODELS.create({"name": "preact_resnet18"}, in_shape=(3, 32, 32), out_dim=10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)  # small: 40 steps on noise stay finite
    loss_fn = LOSSES.create("cross_entropy")
    objective = StandardStep(StepSetup(model, optimizer, loss_fn))

    def repeat(mix):
        return lambda: [mix(x, y, gen) for _ in range(MIX_CALLS)]

    cases = {"step": lambda: objective.step(model, model, optimizer, x, soft), **{n: repeat(m) for n, m in mixes.items()}}
    t = measure_interleaved(cases, rounds=3 if args.quick else 15, warmup=1, device=device)
    target = TARGET[device.type]
    step = median(t["step"])
    rows = [[f"pre-act ResNet-18 training step, batch {BATCH}", f"{1e3 * step:.1f} ms", f"{rel_iqr(t['step']):.0%}",
             "", ""]]
    verdicts = []
    for name in METHODS:
        per_call = [s / MIX_CALLS for s in t[name]]
        ratios = [u / s for u, s in zip(per_call, t["step"])]
        ratio, (lo, hi) = median(ratios), median_ci(ratios)
        v = Verdict("bench_mixing", f"{name} / pre-act ResNet-18 step", ratio, target, "x")
        verdicts.append(v)
        rows.append([f"{name} / step", f"{ratio:.4f}", f"{1e3 * median(per_call):.2f} ms; CI {lo:.4f}-{hi:.4f}",
                     f"<= {target:.2f}", v.result])
    print_table(f"mixing per batch of {BATCH}x3x32x32 vs a training step on {device}, median over rounds",
                ["quantity", "value", "per batch; 95% CI of the ratio", "target", "result"], rows)
    write_summary(args.summary_json, verdicts)


if __name__ == "__main__":
    main()
