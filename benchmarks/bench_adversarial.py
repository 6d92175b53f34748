"""Adversarial robustness (seed 002 ch. 3): what robust evaluation costs against a clean evaluation pass.

(1) Robust evaluation (issue 23, reported, no target): the ``robust`` evaluator with PGD-20 (ε = .03,
    step .0078, random start; the seed's CIFAR settings) on 1,000 images, as a multiple of one clean
    evaluation pass (``standard``) over the same 1,000 images, same model, batch 1,000 / 250. PGD-20
    is 20 forward-backward passes plus the clean and attacked forward passes, so a ratio near
    20 × (forward + backward) / forward + 2 ≈ 60 means no overhead beyond the attack itself.
    Rounds interleave the two cases; the ratio is the median of per-round ratios.

(2) Adversarial training (issue 23, target ≤ 1.1): one step of the ``adversarial`` objective with PGD-k
    (α = 0, random start; ε .03, step .0078) against k + 1 steps of the ``standard`` objective, on the same
    model, batch (128 images) and optimizer, built by ``build_run`` as a run builds them. PGD-k training is
    k attack passes (forward and backward to the input) plus one update: a ratio near 1 means the attack
    and the objective add nothing beyond those passes (an attack pass skips the parameter gradients and
    the optimizer, so it can come in under 1). Median of per-round ratios.

More parts add a function ``bench_<part>`` returning table rows and verdicts, and an entry in ``PARTS``.

Run: ``python benchmarks/bench_adversarial.py [--threads N] [--quick]``.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from _harness import Verdict, measure_interleaved, parse_args, print_table, setup, write_summary

PGD20 = {"name": "pgd", "eps": 0.03, "step": 0.0078, "steps": 20, "random_start": True}
# label: (model, data, eval batch size); the images are the first 1,000 of the training split (--quick: 32)
MODELS = {"mlp (128,128) / digits 1x8x8": ("mlp", "digits", 1000),
          "resnet6 / digits 3x32x32": ("resnet6", {"name": "digits", "size": 32, "channels": 3}, 250)}


def _model_and_images(model_name, data_spec, n: int, device: torch.device):
    """A model (eval mode) and ``n`` images in [0, 1] with labels, on ``device``."""
    from ablab.data.base import Split
    from ablab.registry import DATASETS, MODELS as REG

    data = DATASETS.create(data_spec)
    train = data.splits["train"]
    split = Split(train.x[:n], train.y[:n]).to(device)
    spec = {"name": model_name, "widths": [128, 128]} if model_name == "mlp" else model_name
    model = REG.create(spec, in_shape=tuple(data.in_shape), out_dim=10).to(device).eval()
    return model, split


def bench_robust_eval(device: torch.device, quick: bool) -> tuple[list[list[str]], list[Verdict]]:
    """Per model: T(robust PGD-20) / T(one clean pass) over the same images (median of per-round ratios)."""
    from ablab.registry import EVALUATORS, LOSSES
    from ablab.train.evaluators import EvalContext, ModelView

    n, rounds = (32, 1) if quick else (1000, 3)
    rows, verdicts = [], []
    for label, (model_name, data_spec, batch) in MODELS.items():
        model, split = _model_and_images(model_name, data_spec, n, device)
        ctx = EvalContext([ModelView(model, model)], LOSSES.create("cross_entropy"), True, batch, batch, (), device)
        robust = EVALUATORS.create({"name": "robust", "attack": PGD20})
        clean = EVALUATORS.create("standard")
        cases: dict[str, Callable[[], object]] = {
            "clean": lambda: clean.evaluate(ctx, "test", split, 0),
            "pgd20": lambda: robust.evaluate(ctx, "test", split, 0)}
        times = measure_interleaved(cases, rounds=rounds, warmup=1, device=device)
        ratio = statistics.median(r / c for r, c in zip(times["pgd20"], times["clean"]))
        rows.append([label, str(n), f"{statistics.median(times['clean']) * 1e3:.1f}",
                     f"{statistics.median(times['pgd20']):.2f}", f"{ratio:.1f}"])
        verdicts.append(Verdict("bench_adversarial", f"PGD-20 robust eval / clean pass, {label}", ratio, None, "x"))
    return rows, verdicts


TRAIN_STEPS = (3, 7)  # PGD-k in training (Madry et al.'s CIFAR count is 7)
TRAIN_TARGET = 1.1


def _training_run(model_name, data_spec, objective, device: torch.device):
    """A run built as a study builds it (model, optimizer, objective), and one training batch of 128 images."""
    from ablab.spec import RunSpec
    from ablab.train.build import build_run

    model = {"name": "mlp", "widths": [128, 128]} if model_name == "mlp" else model_name
    spec = RunSpec.model_validate({"data": data_spec, "model": model, "optimizer": {"name": "sgd", "lr": 0.01,
                                   "momentum": 0.9}, "objective": objective, "epochs": 1, "batch_size": 128,
                                   "augment": ["normalize"], "device": str(device)})
    run = build_run(spec)
    x, y = run.data.splits["train"].rows(torch.arange(128, device=run.device))
    run.model.train()
    return run, x, y


def bench_training_step(device: torch.device, quick: bool) -> tuple[list[list[str]], list[Verdict]]:
    """Per model and k: T(one PGD-k adversarial-training step) / T(k + 1 standard steps) (median of per-round ratios)."""
    rounds = 1 if quick else 5
    rows, verdicts = [], []
    for label, (model_name, data_spec, _) in MODELS.items():
        plain, px, py = _training_run(model_name, data_spec, "standard", device)
        for k in TRAIN_STEPS[:1] if quick else TRAIN_STEPS:
            attack = {"name": "pgd", "eps": 0.03, "step": 0.0078, "steps": k, "random_start": True}
            adv, ax, ay = _training_run(model_name, data_spec, {"name": "adversarial", "attack": attack}, device)

            def plain_steps(k=k):
                for _ in range(k + 1):
                    plain.objective.step(plain.model, plain.forward, plain.optimizer, px, py)

            cases: dict[str, Callable[[], object]] = {
                "plain": plain_steps, "adv": lambda: adv.objective.step(adv.model, adv.forward, adv.optimizer, ax, ay)}
            times = measure_interleaved(cases, rounds=rounds, warmup=1, device=device)
            ratio = statistics.median(a / p for a, p in zip(times["adv"], times["plain"]))
            rows.append([label, f"PGD-{k}", f"{statistics.median(times['plain']) * 1e3 / (k + 1):.2f}",
                         f"{statistics.median(times['adv']) * 1e3:.2f}", f"{ratio:.2f}"])
            verdicts.append(Verdict("bench_adversarial", f"PGD-{k} training step / {k + 1} plain steps, {label}",
                                    ratio, TRAIN_TARGET, "x"))
    return rows, verdicts


PARTS = {"robust evaluation: PGD-20 on the images vs one clean pass": (
    ["model", "images", "clean pass (ms)", "PGD-20 eval (s)", "ratio"], bench_robust_eval),
    "adversarial training: one PGD-k step vs k + 1 plain steps (target ≤ 1.1)": (
    ["model", "attack", "plain step (ms)", "PGD-k step (ms)", "ratio"], bench_training_step)}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = setup(args, "bench_adversarial: robust evaluation and adversarial training cost (seed 002 ch. 3)")
    verdicts: list[Verdict] = []
    for title, (header, part) in PARTS.items():
        rows, found = part(device, args.quick)
        print_table(title, header, rows)
        verdicts += found
    write_summary(args.summary_json, verdicts)


if __name__ == "__main__":
    from _harness import own_temp_folder

    with own_temp_folder():
        main()
