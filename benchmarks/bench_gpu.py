"""GPU fast path: train(spec) against a hand-written PyTorch loop, fp32 and bf16, augmentation cost, TFLOP/s.

Runs only where ``torch.cuda.is_available()``; elsewhere it prints "no CUDA device: skipped" and
exits 0 (``--cpu-smoke`` runs the same code on the CPU with tiny sizes and the GPU's uint8 data
path, to check the code path; its numbers mean nothing).

Measured (issues "Scale out", performance item, and 10, item 5), CIFAR-size problems (3×32×32,
10 classes) with the data resident on the GPU: a benchmark-only dataset ``bench_gpu_random32`` of
50,000 random uint8 images converted to float32 in [0, 1] (random labels), generated on the GPU
once per process; ablab holds it, like every 8-bit image dataset on a GPU, as uint8 codes decoded
per batch, the hand-written loop as the float32 tensor.

  - ``3c3d`` at batch 128 and ``preact_resnet18`` at batch 512 (issue 10's cases), through
    ``ablab.train.loop.train(spec)`` (the whole loop: index slicing, augmentation, lr schedule,
    forward, loss, backward, SGD momentum), ``deterministic: false`` (cuDNN autotuning, as
    docs/cluster.md recommends for the GPU fast path), evaluation off, ``drop_last: true``;
  - the same model (the same registry factory) in a hand-written loop: a random permutation per
    epoch on the GPU, index slices, ``torch.autocast(bfloat16)`` around the forward only,
    cross-entropy on the float32 logits, ``zero_grad(set_to_none=True)``, backward, SGD momentum,
    cuDNN autotuning on; ablab / hand-written step time: target ≤ 1.05 at every precision;
  - step time with augmentation (random_crop(4) + hflip + normalize, batched on the GPU) /
    without: target ≤ 1.10 for every model and precision;
  - fp32 vs ``compute: {precision: bf16, channels_last: true}`` (and ``compile: true`` with
    ``--compile``): speed-up, reported;
  - achieved TFLOP/s (3 × forward FLOPs of the conv and linear layers, counted by forward hooks as
    in bench_augment.py) against this GPU's measured matmul peak: ``torch.matmul`` of two 8192×8192
    matrices in fp32 (``float32_matmul_precision`` "highest", i.e. no TF32), TF32 (reference) and
    bf16, timed with CUDA events. fp32 runs are compared with the fp32 peak (cuDNN may run their
    convolutions in TF32, so the fraction can exceed 100 %), bf16 runs with the bf16 peak.

Method. Per-step time = (T(N steps) − T(k steps)) / (N − k) of one whole call (``train(spec)`` or
the hand-written loop), so everything paid once per call (model build, optimizer, first-step
warm-up) cancels; every call is bracketed by ``torch.cuda.synchronize()`` and ends with a host read
of the last loss. N is calibrated per configuration so that N − k steps take about 0.5 s. The
configurations of one model and batch alternate within each round (order reversed every other
round); ratios are medians of per-round ratios with ~95 % CIs. ``--write-results`` writes the
tables, the device name and the date into the GPU section of benchmarks/RESULTS.md.

Run: ``python benchmarks/bench_gpu.py [--quick] [--compile] [--write-results]``. Sized for about
2 minutes on one GPU (a design target, not yet measured on one; ``--compile`` adds a minute or so
of compilation).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from _harness import (
    Verdict, measure_interleaved, median, median_ci, print_table, rel_iqr, sync, time_call, write_summary,
)

AUG_TARGET = 1.10  # step time with augmentation / without
RATIO_TARGET = 1.05  # ablab step time / the hand-written loop's
GROUPS = (("3c3d", 128), ("preact_resnet18", 512))  # (model, batch size): issue 10's cases
N_TRAIN, N_EVAL = 50_000, 1_000
AUGMENT = [{"name": "random_crop", "padding": 4}, {"name": "hflip"}, {"name": "normalize"}]
MATMUL_N = 8192
STEP_SECONDS = 0.5  # N - k steps take about this long
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- bench_gpu:begin -->", "<!-- bench_gpu:end -->"
# uint8 pixels uniform on 0..255, divided by 255: mean 1/2, std sqrt((256² − 1) / 12) / 255
PIXEL_MEAN, PIXEL_STD = 0.5, ((256**2 - 1) / 12) ** 0.5 / 255

_DATA_DEVICE = {"device": "cpu", "n_train": N_TRAIN, "n_eval": N_EVAL}  # set in main() before any run


# ---- the benchmark-only dataset: random uint8 images on the GPU, generated once per process


@functools.lru_cache(maxsize=None)
def _random_images(device: str, n_train: int, n_eval: int, seed: int):
    from ablab.data.base import Dataset, Split

    g = torch.Generator(device=device).manual_seed(seed)

    def split(n: int) -> Split:
        pixels = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device, generator=g)
        labels = torch.randint(0, 10, (n,), device=device, generator=g)
        return Split(pixels.float().div_(255), labels)

    splits = {"train": split(n_train), "val": split(n_eval), "test": split(n_eval)}
    return Dataset("bench_gpu_random32", splits, (3, 32, 32), 10,  # pixels8: kept as uint8 codes on the GPU
                   mean=(PIXEL_MEAN,) * 3, std=(PIXEL_STD,) * 3, pixels8=True).check()


def register_dataset() -> None:
    from ablab.registry import DATASETS

    if "bench_gpu_random32" in DATASETS:
        return

    @DATASETS.register("bench_gpu_random32")
    def bench_gpu_random32(seed: int = 0):
        """Benchmark only: random uint8 3×32×32 images as float in [0, 1], random labels, on the benchmark's device."""
        return _random_images(_DATA_DEVICE["device"], _DATA_DEVICE["n_train"], _DATA_DEVICE["n_eval"], seed)


# ---- configurations


@dataclass(frozen=True)
class Config:
    label: str
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    augment: bool = False
    hand: bool = False  # the hand-written loop instead of train(spec)

    @property
    def base(self) -> str:
        """The same configuration without augmentation (its label)."""
        return self.label.removesuffix(" + aug")

    @property
    def ablab(self) -> str:
        """The train(spec) configuration that a hand-written one is compared with (its label)."""
        return self.label.removeprefix("hand ")


def configs(with_compile: bool) -> list[Config]:
    fast = [("bf16+cl", False)] + ([("bf16+cl+compile", True)] if with_compile else [])
    out = [Config("fp32"), Config("fp32 + aug", augment=True), Config("hand fp32", hand=True)]
    for label, compiled in fast:
        out += [Config(label, "bf16", True, compiled), Config(f"{label} + aug", "bf16", True, compiled, augment=True),
                Config(f"hand {label}", "bf16", True, compiled, hand=True)]
    return out


def make_spec(model: str, batch: int, steps: int, cfg: Config, device: torch.device):
    from ablab.spec import RunSpec

    return RunSpec.model_validate({
        "deterministic": False,  # cuDNN autotuning (docs/cluster.md, the GPU fast path)
        "data": {"name": "bench_gpu_random32"}, "model": {"name": model},
        # small lr: random labels must never diverge (a diverged run stops early)
        "optimizer": {"name": "sgd", "lr": 0.002, "momentum": 0.9},
        "steps": steps, "batch_size": batch, "drop_last": True, "device": device.type,
        "augment": AUGMENT if cfg.augment else [],
        "compute": {"precision": cfg.precision, "channels_last": cfg.channels_last, "compile": cfg.compile},
        "record": {"every_steps": 10**9, "eval_splits": []},  # no evaluation; one host read at the end
    })


def run_train(spec) -> None:
    from ablab.train.loop import train

    result = train(spec, run_id="bench")
    if result.status != "done":
        raise RuntimeError(f"benchmark run ended '{result.status}': {result.error or result.metrics[-3:]}")


def run_hand(model_name: str, batch: int, steps: int, cfg: Config, device: torch.device) -> float:
    """The hand-written loop: ``steps`` SGD steps on the benchmark data; returns the last loss.

    What a plain PyTorch script does, with no ablab code in the step: a permutation per epoch on
    the device, index slices, autocast around the forward only (``cfg.precision``), cross-entropy
    on the float32 logits, backward, SGD momentum 0.9 at lr 0.002 (as ``make_spec``).
    """
    from ablab.registry import MODELS

    data = _random_images(str(device), _DATA_DEVICE["n_train"], _DATA_DEVICE["n_eval"], 0).splits["train"]
    model = MODELS.create({"name": model_name}, in_shape=(3, 32, 32), out_dim=10).to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    forward = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    per_epoch = len(data.y) // batch  # drop_last
    old_benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    try:
        for step in range(steps):
            if step % per_epoch == 0:
                order = torch.randperm(len(data.y), device=device)
            idx = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
            x, y = data.x[idx].contiguous(memory_format=memory_format), data.y[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                out = forward(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.item()
    finally:
        torch.backends.cudnn.benchmark = old_benchmark


def make_call(model: str, batch: int, steps: int, cfg: Config, device: torch.device):
    """One timed unit: a whole ``steps``-step run of this configuration."""
    if cfg.hand:
        return functools.partial(run_hand, model, batch, steps, cfg, device)
    return functools.partial(run_train, make_spec(model, batch, steps, cfg, device))


def forward_flops(model_name: str) -> int:
    """Forward FLOPs per image of the conv and linear layers (bench_augment's hook counter)."""
    from ablab.registry import MODELS
    from bench_augment import count_forward_flops

    model = MODELS.create({"name": model_name}, in_shape=(3, 32, 32), out_dim=10)
    return count_forward_flops(model, torch.zeros(1, 3, 32, 32))


# ---- matmul peak


def matmul_seconds(dtype: torch.dtype, n: int, device: torch.device, calls: int, rounds: int) -> list[float]:
    """Seconds per n×n matmul, one value per round of ``calls`` back-to-back matmuls.

    On CUDA the round is timed by CUDA events recorded on the stream around the calls, and read
    after ``end.synchronize()``; on the CPU (smoke) by the host clock.
    """
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: cuBLAS handle, heuristics, clocks
        torch.matmul(a, b, out=out)
    sync(device)
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                torch.matmul(a, b, out=out)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / calls)  # elapsed_time is in ms
        else:
            p0 = time.perf_counter()
            for _ in range(calls):
                torch.matmul(a, b, out=out)
            times.append((time.perf_counter() - p0) / calls)
    del a, b, out
    return times


@contextlib.contextmanager
def float32_matmul_precision(value: str):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def measure_peaks(device: torch.device, n: int, quick: bool) -> dict[str, tuple[float, float]]:
    """FLOP/s (median) and relative IQR of an n×n matmul in fp32, TF32 and bf16."""
    calls, rounds = (3, 3) if quick else (10, 7)
    peaks = {}
    for name, dtype, precision in (("fp32", torch.float32, "highest"), ("tf32", torch.float32, "high"),
                                   ("bf16", torch.bfloat16, "highest")):
        with float32_matmul_precision(precision):
            t = matmul_seconds(dtype, n, device, calls, rounds)
        peaks[name] = (2 * n**3 / median(t), rel_iqr(t))
    return peaks


# ---- step times


def plan_steps(model: str, batch: int, cfg: Config, device: torch.device, k: int, seconds: float,
               max_steps: int, warmups: int) -> int:
    """N for this configuration: warm up (autotuning, compilation), then size N − k to ``seconds``."""
    probe_steps = k + min(10, max_steps)
    short, probe = make_call(model, batch, k, cfg, device), make_call(model, batch, probe_steps, cfg, device)
    for _ in range(warmups):
        short()
        probe()
    t_short = min(time_call(short, device) for _ in range(2))
    t_probe = min(time_call(probe, device) for _ in range(2))
    per_step = max((t_probe - t_short) / (probe_steps - k), 1e-5)
    return k + min(max_steps, max(10, round(seconds / per_step)))


def measure_group(model: str, batch: int, cfgs: list[Config], device: torch.device, args) -> dict:
    """Per-step seconds (one value per round) of every configuration of one model and batch size."""
    k = 1 if args.cpu_smoke else 5
    seconds = 0.2 if args.quick else STEP_SECONDS
    rounds = 1 if args.cpu_smoke else (2 if args.quick else 5)
    if args.cpu_smoke:  # no calibration: one step more than k
        plans = {cfg.label: k + 1 for cfg in cfgs}
    else:
        plans = {cfg.label: plan_steps(model, batch, cfg, device, k, seconds, 3000, 2) for cfg in cfgs}
    cases = {}
    for cfg in cfgs:
        cases[f"{cfg.label}|k"] = make_call(model, batch, k, cfg, device)
        cases[f"{cfg.label}|N"] = make_call(model, batch, plans[cfg.label], cfg, device)
    t = measure_interleaved(cases, rounds=rounds, warmup=0, device=device)
    per_step = {cfg.label: [(b - a) / (plans[cfg.label] - k) for a, b in zip(t[f"{cfg.label}|k"], t[f"{cfg.label}|N"])]
                for cfg in cfgs}
    return {"k": k, "plans": plans, "rounds": rounds, "per_step": per_step}


def ratio_rows(model: str, batch: int, cfgs: list[Config], per_step: dict) -> tuple[list[list[str]], list[Verdict]]:
    """ablab / hand-written and aug / no-aug (with targets), and the bf16 speed-ups (reported)."""
    rows, verdicts = [], []
    name = f"{model} b{batch}"

    def add(what: str, num: str, den: str, target: float | None) -> None:
        ratios = [a / b for a, b in zip(per_step[num], per_step[den])]
        value, (lo, hi) = median(ratios), median_ci(ratios)
        if target is None:
            rows.append([f"{name}: {what}", f"{value:.2f}", f"{lo:.2f}-{hi:.2f}", "report", ""])
            return
        v = Verdict("bench_gpu", f"{what}, {name}", value, target, "x")
        verdicts.append(v)
        rows.append([f"{name}: {what}", f"{value:.3f}", f"{lo:.3f}-{hi:.3f}", f"<= {target:.2f}", v.result])

    for cfg in cfgs:
        if cfg.hand:
            add(f"ablab / hand-written, {cfg.ablab}", cfg.ablab, cfg.label, RATIO_TARGET)
    for cfg in cfgs:
        if cfg.augment:
            add(f"{cfg.label} / {cfg.base}", cfg.label, cfg.base, AUG_TARGET)
    for cfg in cfgs:
        if cfg.precision == "bf16" and not cfg.augment:
            add(f"speed-up {'hand fp32' if cfg.hand else 'fp32'} -> {cfg.label}",
                "hand fp32" if cfg.hand else "fp32", cfg.label, None)
    return rows, verdicts


# ---- output


class Output:
    """Prints each table and keeps the text for RESULTS.md."""

    def __init__(self):
        self.parts: list[str] = []

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            print_table(title, header, rows)
        print(buf.getvalue(), end="", flush=True)
        self.parts.append(buf.getvalue())

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.parts.append(text + "\n")


def write_results(path: Path, device_name: str, text: str, args) -> None:
    """Replace the GPU section of RESULTS.md (between the bench_gpu markers) with this run."""
    flags = " ".join(f for f, on in (("--quick", args.quick), ("--compile", args.compile)) if on)
    section = (
        f"{BEGIN}\n"
        f"Measured {datetime.date.today()} on **{device_name}** by `python benchmarks/bench_gpu.py --write-results"
        f"{' ' + flags if flags else ''}` (torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{platform.node() or 'host'}):\n\n```\n{text.strip(chr(10))}\n```\n{END}"
    )
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + section + rest.split(END, 1)[1]
    else:
        new = old.rstrip() + "\n\n## GPU: `bench_gpu.py`\n\n" + section + "\n"
    path.write_text(new)
    print(f"   wrote the GPU section of {path}")


def parse_args() -> argparse.Namespace:
    """The options every benchmark takes (see _harness.parse_args), plus this script's own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="few rounds, short runs: numbers are not meaningful")
    parser.add_argument("--diagnose", action="store_true", help="accepted for run_all.py; no extra rows here")
    parser.add_argument("--compile", action="store_true", help="also bf16 + channels_last + torch.compile")
    parser.add_argument("--write-results", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    parser.add_argument("--results-file", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run the CUDA code path on the CPU with tiny sizes (checks the code; numbers mean nothing)")
    parser.add_argument("--summary-json", help="also write the verdicts here (used by run_all.py)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("== bench_gpu — no CUDA device: skipped")
        write_summary(args.summary_json, [])
        return
    torch.set_num_threads(args.threads)
    device = torch.device("cpu") if args.cpu_smoke else torch.device("cuda")
    if args.cpu_smoke:  # follow the GPU's data path: uint8 codes on the device, decoded per batch
        import ablab.train.build

        ablab.train.build.compact_on = lambda device: True
    device_name = "cpu (smoke run)" if args.cpu_smoke else torch.cuda.get_device_name(device)
    _DATA_DEVICE.update(device=str(device), **({"n_train": 256, "n_eval": 32} if args.cpu_smoke else {}))
    groups = tuple((model, 4) for model, _ in GROUPS) if args.cpu_smoke else GROUPS
    matmul_n = 256 if args.cpu_smoke else MATMUL_N
    register_dataset()
    started = time.perf_counter()

    out = Output()
    print('== bench_gpu — issues "Scale out" and 10: train(spec) vs a hand-written loop, fp32 vs bf16, '
          'augmentation cost, TFLOP/s')
    out.line(f"   {datetime.date.today()}  torch {torch.__version__}  CUDA {torch.version.cuda}  device {device} "
             f"({device_name})" + ("  [--quick: numbers not meaningful]" if args.quick else "")
             + ("  [--cpu-smoke: numbers mean nothing]" if args.cpu_smoke else ""))
    t0 = time.perf_counter()
    _random_images(str(device), _DATA_DEVICE["n_train"], _DATA_DEVICE["n_eval"], 0)
    sync(device)
    out.line(f"   data: {_DATA_DEVICE['n_train']} random uint8 3x32x32 images as float32 on {device} "
             f"(generated in {time.perf_counter() - t0:.1f} s); deterministic: false; evaluation off; drop_last")

    peaks = measure_peaks(device, matmul_n, args.quick or args.cpu_smoke)
    timer = "CUDA events" if device.type == "cuda" else "host clock"
    out.table(f"matmul peak: {matmul_n}x{matmul_n} torch.matmul, median over rounds ({timer})",
              ["dtype", "TFLOP/s", "IQR"],
              [[name, f"{flops / 1e12:.1f}", f"{spread:.0%}"] for name, (flops, spread) in peaks.items()])

    cfgs = configs(args.compile)
    verdicts: list[Verdict] = []
    rows, all_ratio_rows = [], []
    for model, batch in groups:
        fwd = forward_flops(model)
        g = measure_group(model, batch, cfgs, device, args)
        ps = g["per_step"]
        for cfg in cfgs:
            step = median(ps[cfg.label])
            peak_name = "bf16" if cfg.precision == "bf16" else "fp32"
            achieved = 3 * fwd * batch / step
            rows.append([f"{model} b{batch} {cfg.label}", f"{g['k']}/{g['plans'][cfg.label]} x {g['rounds']}",
                         f"{1e3 * step:.2f}", f"{rel_iqr(ps[cfg.label]):.0%}", f"{batch / step:,.0f}",
                         f"{achieved / 1e12:.2f}", f"{achieved / peaks[peak_name][0]:.0%} of {peak_name}"])
        group_rows, group_verdicts = ratio_rows(model, batch, cfgs, ps)
        all_ratio_rows += group_rows
        verdicts += group_verdicts
    out.table("training step, train(spec) and the hand-written loop ('hand'): per step = (T(N) - T(k)) / (N - k), "
              "median over rounds;\n"
              "    TFLOP/s = 3 x forward FLOPs (conv + linear) x batch / step; fp32 vs the fp32 (no TF32) peak, "
              "bf16 vs the bf16 peak",
              ["case", "k/N x rounds", "ms/step", "IQR", "images/s", "TFLOP/s", "of peak"], rows)
    out.table("ratios: median of per-round ratios, ~95 % CI",
              ["quantity", "value", "95% CI", "target", "result"], all_ratio_rows)
    print(f"   (bench_gpu.py: {time.perf_counter() - started:.0f} s)")
    if args.write_results and (not args.cpu_smoke or args.results_file != RESULTS):
        write_results(args.results_file, device_name, "".join(out.parts), args)
    elif args.write_results:
        print("   --cpu-smoke: RESULTS.md not written")
    write_summary(args.summary_json, verdicts)


if __name__ == "__main__":
    main()
