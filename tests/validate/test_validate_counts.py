"""``ablab validate`` counts the runs, those already stored, and estimates the cost (issue 12)."""

import math
import os

import pytest

import ablab.step_time
from ablab.cli import main
from conftest import tiny_study

# digits: 1257 training examples = 10 batches of 128 per epoch (9 with drop_last)
STEPS_PER_EPOCH = {False: math.ceil(1257 / 128), True: 1257 // 128}


FIXED = ablab.step_time.StepTime(0.010, 0.008, 0.0125, steps=40, warmup=12, load=(0.75, 1.0, 0.5))


@pytest.fixture
def fixed_step(monkeypatch):
    """Every measured step takes 10 ms (blocks of 8 and 12.5 ms), so the printed estimate is known exactly."""
    monkeypatch.setattr(ablab.step_time, "measure_step_seconds", lambda spec, threads=None: FIXED)


@pytest.mark.parametrize("drop_last", [False, True])
def test_cost_is_training_steps_times_the_step_time(drop_last, fixed_step, write_study, tmp_path, capsys):
    study = tiny_study(grid={"optimizer.lr": [0.1, 0.05]})  # 2 variants × 2 replicates × 2 epochs
    study["base"]["drop_last"] = drop_last
    steps = 4 * 2 * STEPS_PER_EPOCH[drop_last]
    assert main(["validate", str(write_study(study)), "--out", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "  stored: 0 of 4 runs already have a final result; 4 to run" in out
    assert (f"  cost: about {steps * 0.01:.1f} s of training ({steps * 0.008:.1f} s to {steps * 0.0125:.1f} s) = "
            f"{steps} steps × 10 ms (measured: 40 steps of 'optimizer.lr=0.1' after 12 warm-up steps, on cpu, ") in out
    assert f"load average 0.8 on {os.cpu_count()} cores; evaluation not included)" in out


def test_stored_runs_are_counted_and_left_out_of_the_cost(fixed_step, write_study, tmp_path, capsys):
    out_dir = tmp_path / "r"
    study = tiny_study(seeds={"replicates": 1})
    study["base"]["epochs"] = 1
    assert main(["run", str(write_study(study)), "--out", str(out_dir)]) == 0
    capsys.readouterr()
    assert main(["validate", str(write_study(study)), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "stored: 1 of 1 runs already have a final result; 0 to run" in out and "cost:" not in out
    more = tiny_study(seeds={"replicates": 3})
    more["base"]["epochs"] = 1
    assert main(["validate", str(write_study(more)), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "stored: 1 of 3 runs already have a final result; 2 to run" in out
    assert f"= {2 * STEPS_PER_EPOCH[False]} steps × 10 ms" in out


def test_validate_counts_in_the_default_results_directory(fixed_step, write_study, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tiny_study(name="counted", seeds={"replicates": 1})
    study["base"]["epochs"] = 1
    assert main(["run", str(write_study(study))]) == 0  # into results/counted
    capsys.readouterr()
    assert main(["validate", str(write_study(study)), "--no-timing"]) == 0
    assert "stored: 1 of 1 runs" in capsys.readouterr().out


def test_the_step_time_is_measured_on_real_steps_after_a_warm_up(monkeypatch):
    from ablab.spec import RunSpec
    from ablab.train import objectives

    calls = []
    real = objectives.StandardStep.step
    monkeypatch.setattr(objectives.StandardStep, "step", lambda self, *a: calls.append(1) or real(self, *a))
    spec = RunSpec.model_validate(tiny_study()["base"])
    t = ablab.step_time.measure_step_seconds(spec, min_steps=7, min_seconds=0.0)
    assert t.warmup >= ablab.step_time.WARMUP_STEPS and t.steps == 7  # at least 7, and 0 s is reached at once
    assert len(calls) == t.warmup + t.steps
    assert 0 < t.low <= t.seconds <= t.high
    assert t.load is None or len(t.load) == 3
    assert t.device == "cpu"


def test_a_busy_machine_is_said_to_be_busy(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert FIXED.load_text() == "load average 0.8 on 2 cores"
    busy = ablab.step_time.StepTime(0.01, 0.01, 0.01, 20, 3, load=(19.1, 14.0, 12.0))
    assert busy.load_text() == "load average 19.1 on 2 cores: a busy machine, the time will follow its load"


def test_slow_steps_stop_at_the_time_limit_with_a_few_steps(monkeypatch):
    from ablab.spec import RunSpec

    clock = iter(range(0, 10**6, 2))  # every clock read is 2 s later: each step is slow
    monkeypatch.setattr(ablab.step_time.time, "perf_counter", lambda: next(clock))
    t = ablab.step_time.measure_step_seconds(RunSpec.model_validate(tiny_study()["base"]))
    assert t.warmup == ablab.step_time.WARMUP_STEPS and t.steps == ablab.step_time.FEW_STEPS
    assert t.seconds == t.low == t.high == 2


def test_the_range_is_the_fastest_and_slowest_block():
    means = ablab.step_time._block_means([1.0] * 4 + [3.0] * 4 + [2.0] * 2)
    assert means == [1.0, 1.0, 3.0, 3.0, 2.0]
    assert ablab.step_time._block_means([5.0, 7.0]) == [5.0, 7.0]


def test_the_estimate_divides_by_workers_and_measures_with_their_threads(monkeypatch, write_study, tmp_path, capsys):
    seen = []
    monkeypatch.setattr(ablab.step_time, "measure_step_seconds",
                        lambda spec, threads=None: seen.append(threads) or FIXED)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite's 1 thread (conftest) would stand for the cores
    path = str(write_study(tiny_study()))  # 2 runs × 2 epochs × 10 steps
    assert main(["validate", path, "--workers", "2", "--out", str(tmp_path / "none")]) == 0
    assert "= 40 steps × 10 ms, about 0.2 s with 2 workers" in capsys.readouterr().out
    assert main(["validate", path, "--threads", "3", "--out", str(tmp_path / "none")]) == 0
    assert "3 thread(s) per run" in capsys.readouterr().out
    assert seen == [4, 3]  # cores ÷ workers, as ablab run gives each run; or --threads


def test_measuring_restores_the_thread_count():
    import torch
    from ablab.spec import RunSpec

    before = torch.get_num_threads()
    ablab.step_time.measure_step_seconds(RunSpec.model_validate(tiny_study()["base"]), threads=1, min_steps=1,
                                         min_seconds=0.0)
    assert torch.get_num_threads() == before
