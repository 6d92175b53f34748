"""Test-time augmentation and stored logits: what they cost against the evaluation and the run they add to.

No targets but one: storing the test logits at the end of a run should take ≤ 2 % of the run's time
(issue 14). Everything is a ratio measured in the same process, never an absolute time.

(1) TTA: for each model, one plain evaluation pass over the test split (``standard``), then
    ``tta_flip`` (2 views) and ``tta_flip_crop`` (pad 4: 162 views), on the same model and data;
    ratio = median over rounds of T(TTA) / T(plain), rounds interleaved. 162 views at the same
    images-per-pass would give ≈ 162; the views are cut on the device, so the rest is overhead.
(2) Stored logits: the same one-run training study (one_hidden_conv on digits, 20 epochs) with
    ``record.evaluators: [standard]`` and with ``[standard, predictions]`` (the test logits at the
    last epoch), alternating within rounds, after one untimed warm-up of each; ratio = median of
    the per-round ratios T(with) / T(without), whole ``run_study``; also the median added time.

Run: ``python benchmarks/bench_tta.py [--threads N] [--quick] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

# label: (model, data, test images full, --quick): the small model gets the whole test split, so a
# plain pass is not all overhead
MODELS = {"resnet14 / 3x32x32": ("resnet14", {"name": "digits", "size": 32, "channels": 3}, 64, 16),
          "one_hidden_conv / 1x8x8": ("one_hidden_conv", "digits", 360, 64)}


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_tta(device: str, quick: bool, rounds: int) -> list[tuple[str, str, float]]:
    """(model, evaluator, median T(evaluator)/T(standard)) on each model's test images."""
    from ablab.data.base import Split
    from ablab.registry import DATASETS, EVALUATORS, LOSSES, MODELS as REG
    from ablab.train.evaluators import EvalContext, ModelView

    out = []
    for label, (model_name, data_spec, n_full, n_quick) in MODELS.items():
        n_test = n_quick if quick else n_full
        data = DATASETS.create(data_spec)
        test = data.splits["test"]
        split = Split(test.x[:n_test], test.y[:n_test]).to(device)
        model = REG.create(model_name, in_shape=tuple(data.in_shape), out_dim=10).to(device).eval()
        ctx = EvalContext([ModelView(model, model)], LOSSES.create("cross_entropy"), True, 1024, 128, (),
                          torch.device(device))
        evs = {name: EVALUATORS.create(name) for name in ("standard", "tta_flip", "tta_flip_crop")}
        for ev in evs.values():  # warm-up
            ev.evaluate(ctx, "test", split, 0)
        times: dict[str, list[float]] = {name: [] for name in evs}
        for _ in range(rounds):
            for name, ev in evs.items():
                times[name].append(_timed(lambda ev=ev: ev.evaluate(ctx, "test", split, 0)))
        for name in ("tta_flip", "tta_flip_crop"):
            ratios = [t / p for t, p in zip(times[name], times["standard"])]
            out.append((label, name, statistics.median(ratios)))
    return out


def bench_logits(rounds: int, epochs: int, threads: int) -> tuple[float, float, float]:
    """Medians over rounds of T(with stored test logits) / T(without), of T(with) − T(without) (s), and
    one T(without) (s): whole one-run studies."""
    from ablab.execute import run_study
    from ablab.spec import Study, expand

    base = {"data": "digits", "model": {"name": "one_hidden_conv"}, "optimizer": {"name": "sgd", "lr": 0.05},
            "epochs": epochs, "batch_size": 64, "device": "cpu", "record": {"eval_splits": ["test"]}}
    studies = {}
    for key, evaluators in (("without", ["standard"]), ("with", ["standard", "predictions"])):
        spec = copy.deepcopy(base)
        spec["record"]["evaluators"] = evaluators
        studies[key] = Study.model_validate({"name": f"logits_{key}", "base": spec})
    def once(key: str) -> float:
        variants = expand(studies[key])
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            summary = {}
            took = _timed(lambda: summary.update(s=run_study(studies[key], "bench", variants, Path(tmp) / "r",
                                                             workers=1, tty=False, threads=threads)))
        assert summary["s"].counts == {"done": 1}, summary["s"]
        return took

    once("without"), once("with")  # warm-up: imports, the data's first load
    ratios, extra, plain = [], [], []
    for r in range(rounds):
        order = ["without", "with"] if r % 2 == 0 else ["with", "without"]
        t = {key: once(key) for key in order}
        ratios.append(t["with"] / t["without"])
        extra.append(t["with"] - t["without"])
        plain.append(t["without"])
    return statistics.median(ratios), statistics.median(extra), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--part", choices=["all", "tta", "logits"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, epochs = (1, 2) if args.quick else (5, 20)
    print(f"bench_tta: device {args.device}, {args.threads} torch thread(s)")
    if args.part in ("all", "tta"):
        print("| model | evaluator | T(evaluator) / T(one plain pass) |")
        print("|---|---|---|")
        for label, name, ratio in bench_tta(args.device, args.quick, min(rounds, 3)):
            print(f"| {label} | {name} | {ratio:.1f} |")
    if args.part in ("all", "logits"):
        ratio, extra, plain = bench_logits(rounds, epochs, args.threads)
        verdict = "PASS" if ratio - 1 <= 0.02 else "MISS"
        print(f"stored test logits: T(with) / T(without) = {ratio:.3f} ({(ratio - 1) * 100:+.1f} %; target ≤ 2 %: "
              f"{verdict}); T(with) − T(without) = {extra * 1000:.0f} ms on a {plain:.1f}-s run ({epochs} epochs)")


if __name__ == "__main__":
    from _harness import own_temp_folder

    with own_temp_folder():  # every temporary folder of this benchmark, removed when it ends
        main()
