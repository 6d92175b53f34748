"""issue 20: ResNet-18 training-step time with each norm layer relative to nn.BatchNorm2d, and an α sweep's cost.

Target (issue 20): no norm layer of seed 002 ch. 4 (``ghost_batchnorm``, ``batch_group_norm``,
``group_norm``, ``layer_norm``, ``instance_norm``, ``batch_renorm``; ``batchnorm`` too) makes a
ResNet-18 (64-128-256-512, CIFAR-shaped input) training step more than 1.5× slower than the same
model with ``nn.GroupNorm`` (32 groups) in every norm slot; a layer that does needs a reason in
RESULTS.md. The ratio to ``nn.BatchNorm2d`` is printed beside it. A step is forward, cross-entropy,
backward and an SGD step, in training mode; each round times every model once (interleaved), the
ratio is the median over rounds of (layer's step / reference step) in the same round.

Second part: a post-hoc α sweep of k values (the ``example_weighing`` evaluator, seed 002 Eq. 4.3)
over one stored model costs k evaluation passes: the model's forward calls are counted and the
time of one weighed pass is compared with one ordinary eval pass (``standard``).

Run: ``python benchmarks/bench_norms.py [--threads N] [--quick]``. About 5 min on an idle 2-core CPU
(batch 16 and 128 evaluation examples on the CPU; 128 and 1024 on CUDA); ``--quick``: batch 4,
16×16 images, 2 rounds.
"""

from __future__ import annotations

import torch
from torch import nn

from _harness import Verdict, measure_interleaved, median, parse_args, print_table, rel_iqr, setup, write_summary
from ablab.data.base import Split
from ablab.registry import EVALUATORS, MODELS
from ablab.train.evaluators import EvalContext, ModelView

TARGET = 1.5  # step time / the nn.GroupNorm model's step time
NORMS = {
    "batchnorm": "batchnorm",
    "ghost_batchnorm (B′=4)": {"name": "ghost_batchnorm", "ghost_size": 4},
    "batch_group_norm (32 groups × 2 examples)": {"name": "batch_group_norm", "groups": 32, "examples": 2},
    "group_norm (32 groups, moving averages)": {"name": "group_norm", "groups": 32},
    "layer_norm": "layer_norm",
    "instance_norm": "instance_norm",
    "batch_renorm": "batch_renorm",
}
ALPHAS = [0.0, 0.05, 0.1, 0.2, 0.5]


def resnet18(norm, size: int, device: torch.device) -> nn.Module:
    return MODELS.create({"name": "resnet18", "norm": norm}, in_shape=(3, size, size), out_dim=100).to(device)


def with_torch_norms(size: int, device: torch.device, make) -> nn.Module:
    """ResNet-18 with ``make(channels)`` (a torch layer) in every norm slot of the ``batchnorm`` model."""
    model = resnet18("batchnorm", size, device)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, make(child.num_features).to(device))
    return model


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def bench_steps(device: torch.device, quick: bool) -> tuple[list[list[str]], list[Verdict]]:
    batch = 4 if quick else (128 if device.type == "cuda" else 16)
    size = 16 if quick else 32
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, generator=gen)
    y = torch.randint(0, 100, (batch,), device=device, generator=gen)
    models = {"nn.BatchNorm2d": with_torch_norms(size, device, nn.BatchNorm2d),
              "nn.GroupNorm (32 groups)": with_torch_norms(size, device, lambda c: nn.GroupNorm(32, c))}
    models.update({name: resnet18(spec, size, device) for name, spec in NORMS.items()})
    cases = {name: step_fn(m.train(), x, y) for name, m in models.items()}
    t = measure_interleaved(cases, rounds=2 if quick else 7, warmup=1, device=device)
    bn, gn = t["nn.BatchNorm2d"], t["nn.GroupNorm (32 groups)"]
    rows, verdicts = [], []
    for name in models:
        to_bn = median([a / b for a, b in zip(t[name], bn)])
        to_gn = median([a / b for a, b in zip(t[name], gn)])
        result = ""
        if name in NORMS:
            v = Verdict("bench_norms", f"{name} / nn.GroupNorm ResNet-18 step", to_gn, TARGET, "x")
            verdicts.append(v)
            result = v.result
        rows.append([name, f"{1e3 * median(t[name]):.1f} ms", f"{rel_iqr(t[name]):.0%}", f"{to_bn:.2f}",
                     f"{to_gn:.2f}", f"<= {TARGET}" if result else "", result])
    print_table(f"ResNet-18 training step, batch {batch}x3x{size}x{size}, on {device}, median over rounds",
                ["norm", "step", "IQR/median", "/ nn.BatchNorm2d", "/ nn.GroupNorm", "target", "result"], rows)
    return rows, verdicts


def bench_alpha_sweep(device: torch.device, quick: bool) -> list[Verdict]:
    """k α values over one model: forward calls counted, a weighed pass timed against a plain eval pass."""
    n, size = (64, 16) if quick else ((1024, 32) if device.type == "cuda" else (128, 32))
    gen = torch.Generator(device=device).manual_seed(1)
    split = Split(torch.randn(n, 3, size, size, device=device, generator=gen),
                  torch.randint(0, 100, (n,), device=device, generator=gen))
    model = resnet18({"name": "ghost_batchnorm", "ghost_size": 4}, size, device)
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    batch_size = 128
    ctx = EvalContext([ModelView(model, model)], nn.functional.cross_entropy, True, batch_size, batch_size,
                      device=device)
    passes = -(-n // batch_size)
    for alpha in ALPHAS:
        EVALUATORS.create({"name": "example_weighing", "alpha": alpha}).evaluate(ctx, "test", split, 0)
    counted = calls[0] / passes
    standard = EVALUATORS.create("standard")
    weighed = EVALUATORS.create({"name": "example_weighing", "alpha": 0.1})
    t = measure_interleaved({"standard": lambda: standard.evaluate(ctx, "test", split, 0),
                             "weighed": lambda: weighed.evaluate(ctx, "test", split, 0)},
                            rounds=2 if quick else 5, warmup=1, device=device)
    ratio = median([a / b for a, b in zip(t["weighed"], t["standard"])])
    k = len(ALPHAS)
    print_table(f"post-hoc α sweep over one ResNet-18 (ghost BN), {n} examples of 3x{size}x{size}, eval batch "
                f"{batch_size}, on {device}",
                ["quantity", "value", "target", "result"],
                [[f"evaluation passes for k = {k} α values", f"{counted:g}", f"<= {k}",
                  "PASS" if counted <= k else "MISS"],
                 ["one weighed pass / one standard eval pass", f"{ratio:.2f}", "(reported)", ""],
                 ["one standard eval pass", f"{1e3 * median(t['standard']):.1f} ms", "", ""]])
    return [Verdict("bench_norms", f"evaluation passes per alpha value (k = {k})", counted / k, 1.0, "x")]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = setup(args, "bench_norms — issue 20: ResNet-18 step per norm layer vs nn.BatchNorm2d / nn.GroupNorm")
    _, verdicts = bench_steps(device, args.quick)
    verdicts += bench_alpha_sweep(device, args.quick)
    write_summary(args.summary_json, verdicts)


if __name__ == "__main__":
    main()
