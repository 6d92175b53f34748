"""test problems: the cost of batched augmentation against a 3C3D training step, and 3C3D throughput.

Target (issue "test problems"): random_crop (padding 4) + hflip + normalize on a 128×3×32×32
batch costs ≤ 10 % of one 3C3D training step (batch 128) on the same device. Also reported, no
target: 3C3D training images/s, and the step's achieved GFLOP/s as a fraction of this machine's
fp32 matmul peak measured in the same run (2·n³ FLOPs for an n×n matmul; n = 2048 on the CPU,
8192 on CUDA).

FLOPs of the step = 3 × forward FLOPs (forward, plus backward ≈ 2 × forward), the forward
counted analytically by forward hooks: a conv 2·Cin·k·k·Cout·Hout·Wout / groups per image, a
linear layer 2·in·out; pooling, activations, loss and the optimizer are left out.

Augmentations come from ``AUGMENTATIONS.create`` with a CIFAR-shaped ``Dataset``; the step is
ablab's ``standard`` objective step (forward, loss, backward, SGD momentum). Augmentation, step and matmul
alternate within each round; medians over rounds; the ratio is the median of per-round ratios.
On CUDA, cuDNN convolutions may use TF32 (``torch.backends.cudnn.allow_tf32``) while the matmul
peak is plain fp32, so the fraction can read high there.

Run: ``python benchmarks/bench_augment.py [--threads N] [--quick]``. About 30 s on a 2-core CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from _harness import Verdict, measure_interleaved, median, median_ci, parse_args, print_table, rel_iqr, setup, write_summary
from ablab.data.augment import compose
from ablab.data.base import Dataset
from ablab.registry import AUGMENTATIONS, LOSSES, MODELS
from ablab.train.objectives import StandardStep, StepSetup

RATIO_TARGET = 0.10  # augmentation time / training step time
BATCH = 128
AUGMENT = [{"name": "random_crop", "padding": 4}, {"name": "hflip"}, {"name": "normalize"}]
AUG_CALLS = 10  # augmentations per timed call: one is ~1 % of a step, too short to time alone on a busy CPU
# CIFAR-10 training-set statistics, so `normalize` runs with realistic constants
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def count_forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs per example of the conv and linear layers (multiply and add counted apart)."""
    total = 0

    def conv(m: nn.Conv2d, inputs, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += 2 * m.in_channels * kh * kw * m.out_channels * out.shape[-2] * out.shape[-1] // m.groups

    def linear(m: nn.Linear, inputs, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return total


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = setup(args, 'bench_augment — issue "test problems": augmentation cost, 3C3D throughput and FLOP/s')

    # ---- augmentation, as the engine builds it
    dataset = Dataset("cifar_like", {}, (3, 32, 32), 10, mean=CIFAR_MEAN, std=CIFAR_STD)
    augment = compose([AUGMENTATIONS.create(spec, dataset=dataset) for spec in AUGMENT])
    data_gen = torch.Generator(device=device).manual_seed(0)
    x_raw = torch.rand(BATCH, 3, 32, 32, device=device, generator=data_gen)
    y = torch.randint(0, 10, (BATCH,), device=device, generator=data_gen)
    aug_gen = torch.Generator(device=device).manual_seed(1)
    x, _ = augment(x_raw, y, aug_gen)

    # ---- the 3C3D training step (lr small: random labels must not diverge over the rounds)
    model = MODELS.create({"name": "3c3d"}, in_shape=(3, 32, 32), out_dim=10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    loss_fn = LOSSES.create("cross_entropy")
    objective = StandardStep(StepSetup(model, optimizer, loss_fn))
    fwd_flops = count_forward_flops(model, x)
    step_flops = 3 * fwd_flops * BATCH

    # ---- the machine's fp32 matmul peak, same threads and device
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, generator=data_gen) for _ in range(2))

    def run_augment():
        for _ in range(AUG_CALLS):
            augment(x_raw, y, aug_gen)

    cases = {
        "augment": run_augment,
        "step": lambda: objective.step(model, model, optimizer, x, y),
        "matmul": lambda: torch.matmul(a, b),
    }
    t = measure_interleaved(cases, rounds=3 if args.quick else 40, warmup=1 if args.quick else 3, device=device)
    t["augment"] = [s / AUG_CALLS for s in t["augment"]]
    aug, step, mm = median(t["augment"]), median(t["step"]), median(t["matmul"])
    ratios = [u / s for u, s in zip(t["augment"], t["step"])]
    ratio, (lo, hi) = median(ratios), median_ci(ratios)
    peak = 2 * n**3 / mm
    achieved = step_flops / step
    v = Verdict("bench_augment", "augmentation / 3C3D step", ratio, RATIO_TARGET, "x")

    rows = [
        ["augmentation: random_crop(4) + hflip + normalize", f"{1e3 * aug:.2f} ms", f"{rel_iqr(t['augment']):.0%}", "", ""],
        [f"3C3D training step, batch {BATCH} (ablab standard step)", f"{1e3 * step:.2f} ms", f"{rel_iqr(t['step']):.0%}", "", ""],
        ["augmentation / step (median of per-round ratios)", f"{ratio:.4f}", f"CI {lo:.4f}-{hi:.4f}", f"<= {RATIO_TARGET:.2f}", v.result],
        ["3C3D training throughput", f"{BATCH / step:.0f} img/s", "", "report", ""],
        ["3C3D forward FLOPs (conv + linear, analytic)", f"{fwd_flops / 1e6:.2f} MFLOP/img", "", "", ""],
        ["3C3D training FLOPs per step (3 x forward)", f"{step_flops / 1e9:.2f} GFLOP", "", "", ""],
        ["3C3D training step, achieved", f"{achieved / 1e9:.1f} GFLOP/s", "", "report", ""],
        [f"fp32 matmul {n}x{n} (peak reference)", f"{peak / 1e9:.1f} GFLOP/s", f"{rel_iqr(t['matmul']):.0%}", "", ""],
        ["3C3D achieved / matmul peak", f"{achieved / peak:.1%}", "", "report", ""],
    ]
    print_table(f"augmentation vs training step on {device}, median over rounds",
                ["quantity", "value", "IQR / 95% CI", "target", "result"], rows)
    write_summary(args.summary_json, [v])


if __name__ == "__main__":
    main()
