"""The packing plan (``execute.pack``) and packed studies end to end: the same stored numbers as one run per
process, the report, resume of the replicas still to do, and the plan and reasons in ``ablab validate``."""

from __future__ import annotations

import pytest

from ablab.cli import main
from ablab.execute.packing import auto_replicas, family_key, plan_packs
from ablab.spec import Study, expand
from conftest import same_metrics, stored, tiny_study

BASE = {"data": "digits", "model": {"name": "mlp", "widths": [16], "dropout": 0.1},
        "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 2, "batch_size": 128, "device": "cpu",
        "record": {"every_steps": 3, "checkpoints": {"final": True},
                   "evaluators": ["standard", {"name": "predictions", "splits": ["test"], "epochs": "last"}]}}


def _study(pack, replicates: int = 5, **changes) -> dict:
    return tiny_study(base={**BASE, **changes}, grid={"optimizer.lr": [0.01, 0.003]},
                      seeds={"replicates": replicates}, execute={"pack": pack})


def _variants(study: dict):
    return expand(Study.model_validate(study))


def test_families_are_runs_equal_but_for_their_seeds():
    vs = _variants(_study(4))
    keys = [family_key(v.spec) for v in vs]
    assert len(set(keys)) == 2 and keys[:5] == [keys[0]] * 5
    assert len({v.spec.seeds.init for v in vs[:5]}) == 5


def test_plan_cuts_each_family_into_balanced_packs_in_study_order():
    vs = _variants(_study(4))
    plan = plan_packs(vs, 4)
    assert [len(u) for u in plan.units] == [3, 2, 3, 2]
    assert [v.id for u in plan.units for v in u] == [v.id for v in vs]
    assert plan.summary() == "packing: 10 runs in 4 packs of 3/2 replicas"
    assert [len(u) for u in plan_packs(vs, "off").units] == [1] * 10
    assert [len(u) for u in plan_packs(vs, 16).units] == [5, 5]


def test_auto_packs_at_one_thread_on_the_cpu_only_and_small_models():
    assert auto_replicas(2_000, 64, "cpu", 1) == (32, "")
    assert auto_replicas(100_000, 128, "cpu", 1)[0] == 5  # 2^26 / (1e5 · 128)
    r, why = auto_replicas(2_000_000, 128, "cpu", 1)
    assert r == 1 and "compute-bound" in why
    assert "1 CPU thread" in auto_replicas(2_000, 64, "cpu", 2)[1]
    assert "CPU only" in auto_replicas(2_000, 64, "cuda", 1)[1]
    assert [len(u) for u in plan_packs(_variants(_study("auto")), "auto", threads=1).units] == [5, 5]
    # with 2 workers each family is cut in two, so that both workers train a share of it (not a pack each in turn)
    assert [len(u) for u in plan_packs(_variants(_study("auto")), "auto", threads=1, workers=2).units] == [3, 2, 3, 2]


CONV = {**{k: v for k, v in BASE.items() if k != "epochs"}, "model": {"name": "one_hidden_conv", "norm": "batchnorm"},
        "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "augment": [{"name": "random_crop", "padding": 1}]}


def test_auto_packs_a_small_convolutional_model_and_not_one_where_packing_loses():
    """one_hidden_conv 64@5×5/2 on 8×8 digits at batch 32 (35,840 multiply-adds per example) packs 32; on 16×16
    digits at batch 64 (143,360 per example × 64 > 2^22) it does not (measured slower packed: docs/packing.md)."""
    assert auto_replicas(11_978, 32, "cpu", 1, conv_macs=35_840) == (32, "")
    r, why = auto_replicas(42_634, 64, "cpu", 1, conv_macs=143_360)
    assert r == 1 and "convolutional model this large (143,360 multiply-adds per example × batch 64" in why
    small = tiny_study(base={**CONV, "epochs": 1}, seeds={"replicates": 4}, execute={"pack": "auto"})
    assert [len(u) for u in plan_packs(_variants(small), "auto", threads=1).units] == [4]
    large = tiny_study(base={**CONV, "epochs": 1, "batch_size": 64, "data": {"name": "digits", "size": 16, "channels": 1}},
                       seeds={"replicates": 4}, execute={"pack": "auto"})
    plan = plan_packs(_variants(large), "auto", threads=1)
    assert [len(u) for u in plan.units] == [1] * 4 and "compute-bound" in plan.notes[0]


def test_a_packed_conv_study_stores_what_one_run_per_process_stores(write_study, tmp_path, capsys):
    """A BatchNorm CNN study with crops, predictions and activations (as studies/nondeterminism/cpu.yaml), packed
    by ``auto`` and ``off``: the same metrics bitwise and the same artifact files."""
    record = {"every_steps": 4, "eval_splits": ["test"], "evaluators": [
        "standard", {"name": "predictions", "splits": ["test"], "epochs": "last"},
        {"name": "activations", "splits": ["test"], "layers": ["conv0", "act0", "fc1"], "examples": 20}]}
    study = tiny_study(base={**CONV, "steps": 12, "record": record}, seeds={"replicates": 3, "vary": ["init"]},
                       execute={"pack": "auto"})
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    assert main(["run", str(write_study(study, "p.yaml")), "--out", str(packed), "--threads", "1"]) == 0
    assert "packing: 3 runs in 1 pack of 3 replicas" in capsys.readouterr().err
    off = {**study, "execute": {"pack": "off"}}
    assert main(["run", str(write_study(off, "o.yaml")), "--out", str(alone), "--threads", "1"]) == 0
    (mp, rp), (ma, ra) = stored(packed), stored(alone)
    assert rp.run.tolist() == ra.run.tolist() and set(rp.status) == {"done"} and same_metrics(mp, ma)
    for run in rp.run:
        for path in (alone / "runs" / run).iterdir():
            assert (packed / "runs" / run / path.name).read_bytes() == path.read_bytes(), path.name
    capsys.readouterr()


def test_a_family_that_cannot_pack_runs_one_per_process_with_one_line_why():
    plan = plan_packs(_variants(_study(4, compute={"precision": "bf16"})), 4)
    assert [len(u) for u in plan.units] == [1] * 10
    assert len(plan.notes) == 1 and "compute options (precision, compile, channels_last) are not packed" in plan.notes[0]
    assert "10 runs" in plan.notes[0]
    ray = plan_packs(_variants(_study(4)), 4, executor="ray")
    assert not ray.packs and "ray executor does not pack" in ray.notes[0]


@pytest.mark.parametrize("value", [0, -1, "some", True, 2.5])
def test_execute_pack_is_validated(value, write_study, tmp_path, capsys):
    from conftest import run_refused

    err, path = run_refused(write_study, _study(value), tmp_path, capsys)
    assert err.startswith(f"error: {path}: execute.pack") and "auto, off or a number of runs" in err


def test_execute_pack_off_as_bare_yaml(write_study):
    path = write_study("name: t\nbase: {data: digits, model: linear, optimizer: {name: sgd, lr: 0.1}, epochs: 1, "
                       "batch_size: 64}\nexecute: {pack: off}\n")
    from ablab.spec import load_study

    assert load_study(path).execute.pack == "off"


def test_a_packed_study_stores_what_one_run_per_process_stores(write_study, tmp_path, capsys):
    """``ablab run`` with ``execute.pack: 4`` and with ``off``: the same metrics bitwise (one thread per run),
    the same artifact files, each run's info saying it was packed; ``ablab report`` works on it."""
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    assert main(["run", str(write_study(_study(4), "p.yaml")), "--out", str(packed), "--threads", "1"]) == 0
    log = capsys.readouterr().err
    assert "packing: 10 runs in 4 packs of 3/2 replicas" in log
    assert main(["run", str(write_study(_study("off"), "o.yaml")), "--out", str(alone), "--threads", "1"]) == 0
    (mp, rp), (ma, ra) = stored(packed), stored(alone)
    assert rp.run.tolist() == ra.run.tolist() and set(rp.status) == {"done"}
    assert same_metrics(mp, ma)
    assert sorted(rp["info"].map(lambda i: i["packed"]["replicas"])) == [2] * 4 + [3] * 6
    assert all("packed" not in i for i in ra["info"])
    for run in rp.run:
        names = sorted(p.name for p in (packed / "runs" / run).iterdir())
        assert names == sorted(p.name for p in (alone / "runs" / run).iterdir())
        for name in names:
            assert (packed / "runs" / run / name).read_bytes() == (alone / "runs" / run / name).read_bytes(), name
    assert main(["report", str(packed)]) == 0
    assert (packed / "report" / "index.html").is_file()
    capsys.readouterr()


def test_resume_packs_only_the_replicas_still_to_do(write_study, tmp_path, capsys):
    """Two replicates stored, the study extended to five: the three new ones run packed, and the store
    equals the study run in one go without packing."""
    out, alone = tmp_path / "out", tmp_path / "alone"
    assert main(["run", str(write_study(_study(4, replicates=2), "a.yaml")), "--out", str(out), "--threads", "1"]) == 0
    assert main(["run", str(write_study(_study(4), "b.yaml")), "--out", str(out), "--threads", "1"]) == 0
    assert "packing: 6 runs in 2 packs of 3 replicas" in capsys.readouterr().err
    assert main(["run", str(write_study(_study("off"), "c.yaml")), "--out", str(alone), "--threads", "1"]) == 0
    (mo, ro), (ma, _) = stored(out), stored(alone)
    assert same_metrics(mo, ma) and (ro.attempts == 1).all()
    capsys.readouterr()


def test_validate_prints_the_packing_plan_and_why_not(write_study, capsys):
    path = write_study(_study("auto"))
    assert main(["validate", str(path), "--no-timing", "--threads", "1"]) == 0
    assert "packing: 10 runs in 2 packs of 5 replicas (execute.pack: auto)" in capsys.readouterr().out
    assert main(["validate", str(path), "--no-timing", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "packing: none (10 runs, one per process)" in out
    assert "not packed: 10 runs (seeds of 'optimizer.lr=0.01', 'optimizer.lr=0.003') run one per process: auto packs " \
           "at 1 CPU thread per run only" in out


def test_the_status_line_shows_a_pack_as_one_entry_with_its_size():
    import io

    from ablab.execute.progress import ProgressView

    view = ProgressView(total=4, stream=io.StringIO(), tty=False)
    for i, rid in enumerate(["a", "b", "c", "d"]):
        view.started(rid, "lr=0.1", i)
    view.packed(["a", "b", "c"])
    line = view.line()
    assert "lr=0.1 #0,1,2 packed ×3 epoch 0/?" in line and "lr=0.1 #3 epoch" in line
    view.epoch("a", 0, 2)  # the total, reported before the first epoch
    view.epoch("a", 1, 2)
    assert view.eta_seconds() is not None and view.active["a"].runs == 3  # 3 runs half done: 1.5 runs of progress
    view.finished_now = 0
    assert sum(a.runs * (a.epoch - a.first) / (a.epochs - a.first) for a in view.active.values()
               if a.first is not None and a.epochs > a.first) == 1.5


@pytest.mark.slow
def test_kill_9_during_a_pack_then_resume_loses_and_duplicates_nothing(write_study, tmp_path):
    """The driver (training a pack in its own process) is killed while the second pack trains; the rerun
    keeps the first pack's stored runs, trains the second again, and the store equals a fresh unpacked run."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import interruptible, status_counts, wait_for_done

    study = tiny_study(base={**BASE, "record": {**BASE["record"], "every_steps": 20}}, grid={"epochs": [2, 60]},
                       seeds={"replicates": 3}, execute={"pack": "auto"})
    path, out = write_study(study), tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "ablab", "run", str(path), "--out", str(out), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    wait_for_done(out / "ablab.db", 3, proc)
    deadline = time.time() + 60
    while status_counts(out / "ablab.db").get("running", 0) < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert status_counts(out / "ablab.db").get("running", 0) == 3  # the whole second pack is in flight
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    finished = stored(out)[1].set_index("run")
    finished = finished[finished.status == "done"].finished.to_dict()
    assert len(finished) == 3
    rerun = subprocess.run([sys.executable, "-m", "ablab", "run", str(path), "--out", str(out), "--threads", "1"],
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "packing: 3 runs in 1 pack of 3 replicas" in rerun.stderr
    metrics, runs = stored(out)
    assert set(runs.status) == {"done"} and len(runs) == 6
    assert all(runs.set_index("run").loc[r, "finished"] == f for r, f in finished.items())  # not redone
    assert not metrics.duplicated(["run", "step", "split", "name"]).any()
    fresh = tmp_path / "fresh"
    off = write_study({**study, "execute": {"pack": "off"}}, "off.yaml")
    assert subprocess.run([sys.executable, "-m", "ablab", "run", str(off), "--out", str(fresh), "--threads", "1"],
                          capture_output=True, timeout=600).returncode == 0
    assert same_metrics(stored(fresh)[0], metrics)


def test_validate_prints_the_packed_cost_from_a_measured_packed_step(write_study, capsys):
    """With timing, ``validate`` measures a packed step of the first pack: the packed runs' run-steps × its time
    per run (the packed step ÷ R); the study's steps are the ones the cost line counts."""
    path = write_study(tiny_study(base={**CONV, "epochs": 2}, seeds={"replicates": 4}, execute={"pack": "auto"}))
    assert main(["validate", str(path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "packing: 4 runs in 1 pack of 4 replicas (execute.pack: auto)" in out
    line = next(x for x in out.splitlines() if "packed cost:" in x)
    steps = next(x for x in out.splitlines() if x.strip().startswith("cost:")).split(" = ")[1].split(" steps")[0]
    assert f"for the 4 packed runs = {steps} run-steps × " in line and "a packed step of 4 replicas of 'base'" in line


def test_the_report_says_when_a_table_mixes_packed_and_unpacked_runs(write_study, tmp_path, capsys):
    """Two replicates per variant run one per process, the study extended to five run packed: the final table and
    the variability section say that 6 of 10 runs were packed; a store of unpacked runs only says nothing."""
    from ablab.report.tables import packing_note

    out = tmp_path / "out"
    assert main(["run", str(write_study(_study("off", replicates=2), "a.yaml")), "--out", str(out), "--threads", "1"]) == 0
    assert main(["report", str(out)]) == 0
    assert "mixes packed" not in (out / "report" / "index.html").read_text()
    assert main(["run", str(write_study(_study(4), "b.yaml")), "--out", str(out), "--threads", "1"]) == 0
    assert main(["report", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    note = "This table mixes packed and unpacked runs: 6 of 10 runs were trained packed"
    final, variability = page.split("<h2>Final metrics</h2>")[1], page.split("<h2>Run-to-run variability</h2>")[1]
    assert note in final.split("<h2>")[0] and note in variability.split("<h2>")[0]
    runs = stored(out)[1]
    assert packing_note(runs).startswith(note) and packing_note(runs[runs["info"].map(lambda i: "packed" in i)]) == ""
    capsys.readouterr()
