"""The benchmark scripts still run (numbers are not asserted: performance lives in benchmarks/).

Every script in benchmarks/ has a smoke run here: a test marked ``@smokes(script)``, which
``test_every_benchmark_script_has_a_smoke_run`` counts; ``run_all.py`` runs the others.
``bench_gpu.py --cpu-smoke`` is the only run its code gets where no GPU is lent, with the GPU's
data path (uint8 codes decoded per batch); ``bench_executors.py --quick`` runs every executor case;
``bench_artifacts.py --quick`` every cost it reports.
"""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))  # _harness.py is a library


SMOKED: set[str] = set()


def smokes(*scripts: str):
    """Declare the test below the smoke run of ``scripts``."""
    SMOKED.update(scripts)
    return lambda test: test


def test_every_benchmark_script_has_a_smoke_run():
    missing = set(SCRIPTS) - {"run_all.py"} - SMOKED
    assert not missing, f"no smoke run for {sorted(missing)}: add a test marked @smokes(...)"


def test_run_all_runs_every_benchmark():
    """``make bench`` (run_all.py) times every bench_*.py; the fault campaign soak_faults.py is no timing."""
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    assert sorted(run_all.BENCHMARKS) == [s for s in SCRIPTS if s.startswith("bench_")]


def _left_in(tmp: Path) -> list[str]:
    """What processes given ``tmp`` as TMPDIR left there (torch's compile cache, kept by design, aside)."""
    return sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_"))


def _run(*args: str, timeout: int) -> str:
    """Run a benchmark with a TMPDIR of its own (a short path: Ray's socket paths lie below); it must leave
    no temporary folder there."""
    with tempfile.TemporaryDirectory(prefix="bt", dir="/tmp" if Path("/tmp").is_dir() else None) as tmp:
        proc = subprocess.run([sys.executable, *args], cwd=BENCH, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TMPDIR": tmp})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert _left_in(Path(tmp)) == [], f"{args[0]} left temporary folders"
    return proc.stdout


HOLDS_TEMP_FOLDERS = """
import subprocess, sys, tempfile
sys.path.insert(0, {bench!r})
from _harness import own_temp_folder

with own_temp_folder():
    tempfile.mkdtemp(prefix="mine-")
    child = subprocess.Popen([sys.executable, "-c", "import tempfile, time; tempfile.mkdtemp(prefix='childs-'); "
                              "print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\\n"
    print("ready", flush=True)
    child.wait()
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="signals a process group")
def test_a_benchmark_stopped_by_sigterm_leaves_no_temporary_folder(tmp_path):
    """``timeout`` or ``kill`` ends a benchmark with its children: its folder, theirs inside, goes with it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDS_TEMP_FOLDERS.format(bench=str(BENCH))], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "TMPDIR": str(tmp_path)}, start_new_session=True)
    assert proc.stdout.readline() == "ready\n"  # both hold a temporary folder now
    (root,) = _left_in(tmp_path)
    assert root.startswith("ablab-bench-") and sorted(p.name[:5] for p in (tmp_path / root).iterdir()) == ["child", "mine-"]
    os.killpg(proc.pid, signal.SIGTERM)  # as `timeout` does: the whole group
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _left_in(tmp_path) == []


@pytest.mark.slow
@smokes("bench_gpu.py")
def test_bench_gpu_cpu_smoke_runs_every_configuration():
    out = _run("bench_gpu.py", "--cpu-smoke", timeout=600)
    for model in ("3c3d", "preact_resnet18"):
        for row in ("fp32 + aug / fp32", "bf16+cl + aug / bf16+cl", "speed-up fp32 -> bf16+cl",
                    "ablab / hand-written, fp32", "ablab / hand-written, bf16+cl", "speed-up hand fp32 -> hand bf16+cl"):
            assert f"{model} b4: {row}" in out, out[-3000:]
        assert f"{model} b4 hand bf16+cl " in out, out[-3000:]


@pytest.mark.slow
@smokes("bench_replicas.py")
def test_bench_replicas_quick_prints_every_case_ratio_choice_and_memory():
    out = _run("bench_replicas.py", "--quick", "--study", "--study-set", "epochs=1", "--study-replicates", "2",
               "--study-allocator", timeout=900)
    for case in ("ablab alone", "ablab packed", "plain alone", "plain packed"):
        assert f"\n{case} " in out, out[-3000:]
    for ratio in ("ablab speed-up (alone / packed)", "plain speed-up (alone / packed)", "ablab packed / plain packed"):
        assert ratio in out, out[-3000:]
    assert "one_hidden_conv 64@5x5/2, batch 32" in out and "compute-bound" in out  # auto's choices, with why
    assert "one run alone" in out and "a packed group of 4" in out  # peak memory of both
    assert "one_hidden_conv: a packed group of 4" in out
    assert "one_hidden_conv 64@5x5/2 + BN on 8x8 digits, batch 32" in out  # the conv cases, with auto's choice
    assert "R = 1 (auto does not pack a convolutional model this large" in out
    # the GPU target's case (resnet6 at batch 128), small, so its code runs where no GPU is lent
    assert "the GPU target's case, convolutional" in out and "\nresnet6 + BN on 32x32x3 digits, batch 128  2 " in out
    assert "MISS: MLP on CPU" in out or "PASS: MLP on CPU" in out
    for pack in ("off", "auto"):
        for alloc in ("kept", "system"):
            assert f"execute.pack: {pack}, allocator {alloc}:" in out, out[-3000:]
        assert f"allocator, execute.pack {pack}: C library defaults / keep_freed_memory = " in out
    assert "wall-time ratio unpacked / packed" in out
    assert "variability tables identical" in out  # the study packed and unpacked: the same variability
    assert out.count("PASS: ") + out.count("MISS: ") == 3


@pytest.mark.slow
@smokes("bench_executors.py")
def test_bench_executors_quick_runs_every_case():
    pytest.importorskip("ray")
    out = _run("bench_executors.py", "--quick", timeout=600)
    for row in ("local, 2 worker processes (forked warm)", "ray, 2 workers, whole (init + shutdown)",
                "ray / local, 2 workers, whole wall, runs 4x as long", "ray, 1 in flight"):
        assert row in out, out[-3000:]


@pytest.mark.slow
@smokes("bench_artifacts.py")
def test_bench_artifacts_quick_reports_every_cost(tmp_path):
    summary = tmp_path / "summary.json"
    out = _run("bench_artifacts.py", "--quick", "--summary-json", str(summary), timeout=300)
    for row in ("(1) record.checkpoints", "(2) evaluators [standard, predictions", "mlp (128,128) / digits, batch 64",
                "3c3d / digits 3x16x16, batch 128", "source study: train (run_study)",
                "post-hoc study: evaluate (run_study)", "post-hoc / source training, run_study"):
        assert row in out, out[-3000:]
    entries = json.loads(summary.read_text())
    assert len(entries) == 5 and all(e["target"] is None and e["value"] > 0 for e in entries)


@pytest.mark.slow
@smokes("bench_variability.py")
def test_bench_variability_quick_times_every_part(tmp_path):
    summary = tmp_path / "summary.json"
    out = _run("bench_variability.py", "--quick", "--summary-json", str(summary), timeout=300)
    for row in ("pairwise Spearman matrix", "pairwise ensemble delta matrix", "whole variability() call",
                "naive double loop over the 190 pairs"):
        assert row in out, out[-3000:]
    (entry,) = json.loads(summary.read_text())
    assert entry["target"] == 10.0 and entry["value"] > 0


@pytest.mark.slow
@smokes("bench_tta.py")
def test_bench_tta_quick_reports_every_ratio():
    out = _run("bench_tta.py", "--quick", timeout=300)
    for model in ("resnet14 / 3x32x32", "one_hidden_conv / 1x8x8"):
        for name in ("tta_flip", "tta_flip_crop"):
            assert f"| {model} | {name} |" in out, out[-3000:]
    assert "stored test logits: T(with) / T(without) = " in out, out[-3000:]


@pytest.mark.slow
@smokes("bench_estimate.py")
def test_bench_estimate_quick_prints_the_ratio(tmp_path):
    summary = tmp_path / "summary.json"
    out = _run("bench_estimate.py", "--quick", "--summary-json", str(summary), timeout=300)
    assert "quickstart.yaml (epochs=2, seeds.replicates=1)" in out and "wall / est" in out, out[-3000:]
    (entry,) = json.loads(summary.read_text())
    assert entry["target"] is None and math.isfinite(entry["value"]) and entry["value"] > 0


@pytest.mark.slow
@smokes("bench_norms.py")
def test_bench_norms_quick_times_every_norm_layer_and_counts_the_alpha_passes(tmp_path):
    summary = tmp_path / "summary.json"
    out = _run("bench_norms.py", "--quick", "--summary-json", str(summary), timeout=600)
    for name in ("nn.BatchNorm2d", "nn.GroupNorm", "ghost_batchnorm", "batch_group_norm", "group_norm", "layer_norm",
                 "instance_norm", "batch_renorm", "evaluation passes for k = 5 α values"):
        assert name in out, out[-3000:]
    entries = json.loads(summary.read_text())
    assert len(entries) == 8 and all(math.isfinite(e["value"]) and e["value"] > 0 for e in entries), entries
    assert entries[-1]["value"] == 1.0  # k α values: exactly k evaluation passes


QUICK_WITH_TARGETS = ["bench_loop.py", "bench_augment.py", "bench_mixing.py", "bench_probes.py"]


@pytest.mark.slow
@pytest.mark.parametrize("script", QUICK_WITH_TARGETS)
@smokes(*QUICK_WITH_TARGETS)
def test_quick_run_measures_every_target(script, tmp_path):
    """The benchmarks whose numbers go to run_all's summary: each --quick run writes finite, positive values."""
    summary = tmp_path / "summary.json"
    out = _run(script, "--quick", "--summary-json", str(summary), timeout=600)
    if script == "bench_loop.py":  # (c): the allocator setting's worth, measured in child processes
        assert "(c) the allocator" in out and "one_hidden_conv + BN / digits, batch 32" in out, out[-3000:]
    entries = json.loads(summary.read_text())
    assert entries and all(e["benchmark"] and math.isfinite(e["value"]) and e["value"] > 0 for e in entries), entries


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes by pid in /proc")
@smokes("soak_faults.py")
def test_soak_faults_quick_runs_from_the_command_line(tmp_path):
    out = _run("soak_faults.py", "--kills", "1", "--quick", "--seed", "2", "--work", str(tmp_path), timeout=600)
    assert '"problems": {}' in out and '"cycles": 1' in out, out[-3000:]


@pytest.mark.slow
@smokes("bench_adversarial.py")
def test_bench_adversarial_quick_reports_the_robust_evaluation_ratio():
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "s.json"
        out = _run("bench_adversarial.py", "--quick", "--summary-json", str(summary), timeout=300)
        verdicts = json.loads(summary.read_text())
    assert "robust evaluation: PGD-20 on the images vs one clean pass" in out, out[-3000:]
    for model in ("mlp (128,128) / digits 1x8x8", "resnet6 / digits 3x32x32"):
        assert any(v["what"].endswith(model) and v["result"] == "reported" and v["value"] > 1 for v in verdicts)
    # the PGD-k training step against k + 1 plain steps (issue 23): printed, with its target
    assert "adversarial training: one PGD-k step vs k + 1 plain steps" in out, out[-3000:]
    steps = [v for v in verdicts if v["what"].startswith("PGD-3 training step / 4 plain steps")]
    assert len(steps) == 2 and all(v["target"] == 1.1 and v["value"] > 0 for v in steps), verdicts
