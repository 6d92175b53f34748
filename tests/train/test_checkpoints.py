"""Checkpoints and continued runs: bitwise resume, re-seeded streams, the artifact store, kill -9 safety."""

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ablab
from ablab import seeding
from ablab.cli import main
from ablab.store import Store
import gates
import procnet
from conftest import TINY_BASE, stored

# dropout (stochastic stream), augmentation (augment stream), shuffling, momentum: every stream has state
BASE = {**copy.deepcopy(TINY_BASE), "model": {"name": "mlp", "widths": [16], "dropout": 0.2},
        "augment": [{"name": "hflip"}], "epochs": 4, "batch_size": 100,
        "record": {"every_steps": 3, "eval_splits": ["val", "test"], "checkpoints": {"epochs": [2], "final": True}}}


def _study(name="ck", **extra):
    study = {"name": name, "base": copy.deepcopy(BASE)}
    study.update(extra)
    return study


def _continue(seeds=None, epoch=2):
    init = {"run": {"label": "full"}, "epoch": epoch}
    cont = {"label": ["full", "continued"], "init_from": [None, init]}
    if seeds is not None:
        cont["seeds"] = [{}, seeds]
    return cont


def test_a_continued_run_is_bitwise_the_run_that_never_stopped(write_study, tmp_path):
    out = tmp_path / "r"
    assert main(["run", str(write_study(_study(zip=_continue()))), "--out", str(out)]) == 0
    metrics, runs = stored(out)
    by = runs.set_index("label")
    full, cont = by.loc["full", "run"], by.loc["continued", "run"]
    m_full = metrics[metrics.run == full].drop(columns="run").reset_index(drop=True)
    m_cont = metrics[metrics.run == cont].drop(columns="run").reset_index(drop=True)
    store = Store.open(out)
    try:
        step2 = store.load_checkpoint(full, 2)["step"]
        after = m_full[m_full.step >= step2].reset_index(drop=True)
        # the continued run starts with the evaluation at epoch 2 and then records exactly what the full run did
        assert len(m_cont) > 0 and m_cont.step.min() == step2
        assert after.equals(m_cont), (after, m_cont)
        a, b = store.load_checkpoint(full, "final"), store.load_checkpoint(cont, "final")
        assert a["step"] == b["step"] and a["epoch"] == b["epoch"] == 4
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), k
        for (_, sa), (_, sb) in zip(sorted(a["optimizer"]["state"].items()), sorted(b["optimizer"]["state"].items())):
            assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
        # the continued run's id depends on its source and epoch
        assert runs.set_index("label").loc["continued", "spec"]["init_from"] == {"run": full, "epoch": 2, "study": None}
        assert runs.set_index("label").loc["continued", "info"]["continued_from"]["restored_streams"] == [
            "augment", "shuffle", "stochastic"]
    finally:
        store.close()


def test_a_new_shuffle_seed_changes_the_order_from_the_restored_epoch_only(write_study, tmp_path, monkeypatch):
    import ablab.data.sampler as sampler  # the iid sampler's epochs

    orders: list[torch.Tensor] = []
    real = sampler.iterate_batches

    def spy(n, batch_size, drop_last, generator, device="cpu"):
        batches = list(real(n, batch_size, drop_last, generator, device))
        orders.append(torch.cat(batches))
        return iter(batches)

    monkeypatch.setattr(sampler, "iterate_batches", spy)
    out = tmp_path / "r"
    study = _study(zip=_continue(seeds={"shuffle": 7}), seeds={"vary": []})
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 0
    full_orders, cont_orders = orders[:4], orders[4:]
    assert len(cont_orders) == 2  # epochs 3 and 4 only: epochs 1-2 come from the checkpoint
    n = len(full_orders[0])
    fresh = seeding.create_generator("shuffle", 7)
    expected = [torch.randperm(n, generator=fresh) for _ in range(2)]
    assert all(torch.equal(e, c) for e, c in zip(expected, cont_orders))
    assert not torch.equal(cont_orders[0], full_orders[2])
    metrics, runs = stored(out)
    by = runs.set_index("label")
    info = by.loc["continued", "info"]["continued_from"]
    assert info["restored_streams"] == ["augment", "stochastic"]  # shuffle started afresh from seed 7
    # what was before the restored epoch is the source's: the first evaluation equals the full run's at epoch 2
    m = metrics.set_index(["run", "epoch", "split", "name"]).value
    full, cont = by.loc["full", "run"], by.loc["continued", "run"]
    assert m.loc[(cont, 2, "test", "loss")] == m.loc[(full, 2, "test", "loss")]
    assert m.loc[(cont, 4, "test", "loss")] != m.loc[(full, 4, "test", "loss")]


def test_checkpoints_are_indexed_and_read_back(write_study, tmp_path):
    out = tmp_path / "r"
    study = _study(seeds={"replicates": 1})
    study["base"]["record"]["evaluators"] = ["standard", {"name": "predictions", "splits": ["test"], "epochs": [0, 4]}]
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 0
    store = Store.open(out)
    try:
        run = store.runs().run[0]
        arts = store.artifacts(run)
        assert sorted(arts[arts.kind == "checkpoint"].epoch.tolist()) == [2, 4]
        assert sorted(arts[arts.kind == "predictions"].epoch.tolist()) == [0, 4]
        assert store.checkpoint_epochs(run) == [2, 4] and store.final_epoch(run) == 4
        assert store.artifact_bytes() == int(arts["size"].sum()) > 0
        for row in arts.itertuples():  # sizes and digests describe the files on disk
            data = store.artifact_path(run, row.name).read_bytes()
            assert len(data) == row.size
        ck = store.load_checkpoint(run, 4)
        assert ck["epoch"] == 4 and set(ck["rng"]) == {"shuffle", "augment", "stochastic"}
        # the final predictions are the restored model's outputs on the test split
        from ablab.spec import RunSpec
        from ablab.train.build import build_model, load_run_data

        spec = RunSpec.model_validate(store.runs().spec[0])
        data = load_run_data(spec)
        model = build_model(spec, data)
        model.load_state_dict(ck["model"])
        model.eval()
        with torch.no_grad():
            direct = model(data.splits["test"].x).numpy()
        pred = store.load_predictions(run, "test", "final")
        assert pred.dtype == np.float32 and pred.shape == direct.shape
        np.testing.assert_allclose(pred, direct, rtol=1e-6, atol=1e-6)
        assert np.abs(store.load_predictions(run, "test", 0) - pred).max() > 0  # epoch 0: the initial model
        # a damaged file is refused, not read
        path = store.artifact_path(run, "checkpoint_e0002.pt")
        path.write_bytes(path.read_bytes()[:-1] + b"x")
        from ablab.errors import StoreError

        with pytest.raises(StoreError, match="sha256"):
            store.load_checkpoint(run, 2)
    finally:
        store.close()
    assert not (out / ".staging").exists()


def test_a_kill_during_an_artifact_commit_leaves_no_orphans_and_loses_nothing(write_study, tmp_path):
    spec = write_study(_study(seeds={"replicates": 3}))
    out = tmp_path / "r"
    # the driver dies (kill -9) right after moving the first artifact file of the second run into place,
    # before the transaction that records it
    script = f"""
import os, sys
real, moved = os.replace, []
def replace(a, b):
    real(a, b)
    if os.sep + "runs" + os.sep in str(b) and str(b).endswith(".pt"):
        moved.append(b)
        if len(moved) == 3:
            os.kill(os.getpid(), 9)
os.replace = replace
from ablab.cli import main
sys.exit(main(["run", {str(spec)!r}, "--out", {str(out)!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    con_runs = stored(out)[1]
    assert (con_runs.status == "done").sum() == 1
    leftover = [p for p in (out / "runs").rglob("*.pt")]
    assert leftover  # the killed commit left a moved file of an unrecorded run (and staging)
    assert main(["run", str(spec), "--out", str(out)]) == 0
    metrics, runs = stored(out)
    assert set(runs.status) == {"done"} and len(runs) == 3
    store = Store.open(out)
    try:
        indexed = {(r.run, r.name) for r in store.artifacts().itertuples()}
    finally:
        store.close()
    on_disk = {(p.parent.name, p.name) for p in (out / "runs").rglob("*") if p.is_file() and p.name != "spec.json"}
    assert on_disk == indexed  # no orphan files, nothing indexed but missing
    assert not (out / ".staging").exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    # nothing lost: the numbers equal an uninterrupted study
    ref = tmp_path / "ref"
    assert main(["run", str(spec), "--out", str(ref)]) == 0
    from conftest import same_metrics

    assert same_metrics(metrics, stored(ref)[0])


def test_checkpoints_over_the_size_limit_fail_validation_with_the_estimate(write_study, tmp_path, capsys):
    study = _study()
    study["base"]["record"]["checkpoints"] = {"every_epochs": 1}
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out), "--max-artifact-gb", "1e-6"]) == 2
    err = capsys.readouterr().err
    assert "artifacts would take about" in err and "--max-artifact-gb" in err
    assert not out.exists()


def test_validate_and_status_report_artifact_sizes(write_study, tmp_path, capsys):
    spec = write_study(_study(seeds={"replicates": 1}))
    assert main(["validate", str(spec)]) == 0
    assert "artifacts: about" in capsys.readouterr().out
    out = tmp_path / "r"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    assert "artifacts: 2 files" in capsys.readouterr().out


@pytest.mark.parametrize("init, message", [
    ({"run": {"label": "nope"}, "epoch": 2}, "no run of this study match"),
    ({"run": {"label": "full"}, "epoch": 3}, "saves no checkpoint at epoch 3"),
    ({"study": "does/not/exist", "run": "0123456789abcdef", "epoch": 2}, "not an ablab results directory"),
    ({"run": {"label": "full"}, "epoch": 2, "select": {"metric": "batch.loss", "k": 1}}, "exactly one of"),
])
def test_bad_init_from_is_one_clear_error_and_writes_nothing(write_study, tmp_path, capsys, init, message):
    study = _study(zip={"label": ["full", "continued"], "init_from": [None, init]})
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "init_from" in err and err.count("error:") == 1
    assert not out.exists()


def test_a_source_that_failed_fails_its_continuation_with_the_reason(write_study, tmp_path, monkeypatch):
    from ablab.train import objectives

    real = objectives.StandardStep.step

    def step(self, model, forward, optimizer, x, y):
        if _boom["on"]:
            raise RuntimeError("simulated crash")
        return real(self, model, forward, optimizer, x, y)

    _boom = {"on": True}
    monkeypatch.setattr(objectives.StandardStep, "step", step)
    out = tmp_path / "r"
    assert main(["run", str(write_study(_study(zip=_continue()))), "--out", str(out)]) == 1
    runs = stored(out)[1].set_index("label")
    assert runs.loc["full", "status"] == "failed"
    assert runs.loc["continued", "status"] == "failed" and "no checkpoint to continue from" in runs.loc["continued", "error"]
    _boom["on"] = False
    assert main(["run", str(write_study(_study(zip=_continue()))), "--out", str(out)]) == 0


def test_continuing_a_run_of_a_stored_study(write_study, tmp_path):
    src = tmp_path / "src"
    assert main(["run", str(write_study(_study(name="src", seeds={"replicates": 2}), "src.yaml")), "--out", str(src)]) == 0
    study = _study(name="cont", seeds={"replicates": 2})
    study["base"]["init_from"] = {"study": str(src), "run": {}, "epoch": 2}  # replicate r continues replicate r
    study["base"]["record"]["checkpoints"] = {}
    out = tmp_path / "cont"
    assert main(["run", str(write_study(study, "cont.yaml")), "--out", str(out)]) == 0
    m_src, r_src = stored(src)
    m_cont, r_cont = stored(out)
    for rep in (0, 1):
        s = r_src[r_src.replicate == rep].run.iloc[0]
        c = r_cont[r_cont.replicate == rep].run.iloc[0]
        assert r_cont.set_index("run").loc[c, "spec"]["init_from"]["run"] == s
        b = m_cont[m_cont.run == c].drop(columns="run").reset_index(drop=True)
        a = m_src[(m_src.run == s) & (m_src.step >= b.step.min())].drop(columns="run").reset_index(drop=True)
        assert a.equals(b)
    # moving the source keeps the run ids (the location is not part of them)
    os.rename(src, tmp_path / "moved")
    study["base"]["init_from"]["study"] = str(tmp_path / "moved")
    from ablab.spec import expand, load_study

    ids = [v.id for v in expand(load_study(write_study(study, "cont2.yaml")), open_stored=ablab.load)]
    assert sorted(ids) == sorted(r_cont.run)


def test_select_continues_the_k_best_runs_and_records_the_choice(write_study, tmp_path):
    src = tmp_path / "screen"
    screen = _study(name="screen", seeds={"replicates": 4})
    screen["base"]["epochs"] = 2
    screen["base"]["record"]["checkpoints"] = {"final": True}
    assert main(["run", str(write_study(screen, "screen.yaml")), "--out", str(src)]) == 0
    m_src, r_src = stored(src)
    final_loss = {r: m_src[(m_src.run == r) & (m_src.split == "batch") & (m_src.name == "loss")].sort_values("step").value.iloc[-1]
                  for r in r_src.run}
    best = sorted(final_loss, key=final_loss.get)[:2]
    cont = _study(name="continue")
    cont["base"]["init_from"] = {"study": str(src), "select": {"metric": "batch.loss", "k": 2}, "epoch": 2}
    cont["base"]["record"]["checkpoints"] = {}
    out = tmp_path / "cont"
    assert main(["run", str(write_study(cont, "cont.yaml")), "--out", str(out)]) == 0
    _, runs = stored(out)
    assert [s["init_from"]["run"] for s in runs.sort_values("replicate").spec] == best
    sel = runs.sort_values("replicate").origin.tolist()
    assert [o["selection"]["rank"] for o in sel] == [0, 1] and sel[0]["selection"]["mode"] == "min"  # declared
    assert sel[0]["selection"]["value"] == final_loss[best[0]] and sel[0]["selection"]["pool"] == 4
    src_seeds = r_src.set_index("run").spec
    assert [s["seeds"] for s in runs.sort_values("replicate").spec] == [src_seeds[b]["seeds"] for b in best]


def test_one_writer_per_results_directory(write_study, tmp_path, capsys):
    from ablab.store import StudyLock

    spec = write_study(_study(seeds={"replicates": 2}))
    out = tmp_path / "r"
    with StudyLock(out):  # another `ablab run` holds the study
        assert main(["run", str(spec), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "another 'ablab run' is writing this study" in err and f"pid {os.getpid()}" in err
        assert not (out / "ablab.db").exists()
    assert main(["run", str(spec), "--out", str(out), "--workers", "2"]) == 0  # released: the next run proceeds
    # a holder that died (kill -9) leaves no lock behind
    proc = subprocess.run([sys.executable, "-c", f"import os; from ablab.store import StudyLock; "
                           f"StudyLock({str(out)!r}).acquire(); os.kill(os.getpid(), 9)"])
    assert proc.returncode == -9
    with StudyLock(out):
        pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_continued_run_equals_the_uninterrupted_one_and_post_hoc_units_run(write_study, tmp_path):
    """Deterministic kernels: the CUDA augment generator and stochastic state are restored too."""
    study = _study(zip=_continue())
    study["base"]["device"] = "cuda"
    study["base"]["record"]["evaluators"] = ["standard", {"name": "predictions", "splits": ["test"]},
                                             {"name": "sharpness", "batches": 1, "hessian_iters": 2}]
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 0
    metrics, runs = stored(out)
    by = runs.set_index("label")
    full, cont = by.loc["full", "run"], by.loc["continued", "run"]
    assert all(d.startswith("cuda") for d in runs.device)
    m_cont = metrics[metrics.run == cont].drop(columns="run").reset_index(drop=True)
    m_full = metrics[(metrics.run == full) & (metrics.step >= m_cont.step.min())].drop(columns="run")
    assert m_full.reset_index(drop=True).equals(m_cont)
    post = {"name": "post", "source": {"study": str(out)}, "members": "pairs",
            "base": {"evaluators": ["disagreement", "ensemble"], "device": "cuda"}}
    assert main(["run", str(write_study(post, "post.yaml")), "--out", str(tmp_path / "p")]) == 0
    assert len(stored(tmp_path / "p")[1]) == 2
    store = Store.open(out)
    try:  # logits stored from the GPU: float32 and finite
        pred = store.load_predictions(full, "test")
        assert pred.dtype == np.float32 and np.isfinite(pred).all()
    finally:
        store.close()


@pytest.mark.parametrize("change, message", [
    ({"epochs": None, "steps": 5}, "nothing would be trained"),
    ({"model": {"name": "mlp", "widths": [8], "dropout": 0.2}}, "does not fit this run's model"),
])
def test_a_continuation_that_cannot_train_or_load_is_refused_before_anything_runs(write_study, tmp_path, capsys,
                                                                                   change, message):
    src = tmp_path / "src"
    assert main(["run", str(write_study(_study(name="src"), "src.yaml")), "--out", str(src)]) == 0
    study = _study(name="cont")
    study["base"]["init_from"] = {"study": str(src), "run": {}, "epoch": 2}
    study["base"].update(change)
    study["base"] = {k: v for k, v in study["base"].items() if v is not None}
    out = tmp_path / "cont"
    assert main(["run", str(write_study(study, "cont.yaml")), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert not out.exists()


def test_in_study_sources_are_checked_against_their_plan(write_study, tmp_path, capsys):
    # a steps-based source with a checkpoint every epoch can be continued at epoch 1 ...
    study = _study(zip={"label": ["full", "continued"], "init_from": [None, {"run": {"label": "full"}, "epoch": 1}]})
    study["base"].pop("epochs")
    study["base"]["steps"] = 30
    study["base"]["record"]["checkpoints"] = {"every_epochs": 1}
    assert main(["validate", str(write_study(study))]) == 0
    # ... but not at an epoch it never reaches
    study["zip"]["init_from"][1]["epoch"] = 7
    study["zip"]["steps"] = [30, 300]  # the continued run would train on; its source stops at epoch 3
    study["base"]["record"]["checkpoints"] = {"epochs": [7], "final": True}
    capsys.readouterr()
    assert main(["validate", str(write_study(study))]) == 2
    assert "saves no checkpoint at epoch 7" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes by pid in /proc")
@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["forked-workers", "forkserver-workers"])
def test_workers_die_with_their_driver(threads, write_study, tmp_path, short_tmp):
    """A SIGKILLed driver leaves no process behind: its workers (forked, or with 2 threads from the
    forkserver, then grandchildren), the forkserver and the resource tracker all end. The driver's
    TMPDIR is the test's own: the forkserver's socket folder that a killed driver leaves (for the next
    run in the results directory to remove) is noted there, and goes with the test."""
    gate = tmp_path / "gate"  # never opened: both workers hold mid-run when the driver dies
    study = _study(seeds={"replicates": 4}, imports=[gates.install(tmp_path)])
    study["base"]["model"] = {"name": "gated_mlp", "gate": str(gate)}
    spec, out = write_study(study), tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "ablab", "run", str(spec), "--out", str(out), "--workers", "2",
                             "--threads", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(short_tmp)})
    tree: dict[int, int | None] = {}
    try:
        gates.wait_for_waiting(gate, 2, proc)
        tree = {pid: procnet.started(pid) for pid in procnet.descendants(proc.pid)}
        assert set(gates.waiting(gate)) <= set(tree)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = procnet.wait_gone(tree, timeout_s=30)
        assert not left, f"{ {pid: procnet.comm(pid) for pid in left} } outlived their driver"
        noted = (out / ".staging" / "temp-dirs").read_text().split() if threads == 2 else []
        assert threads == 1 or Path(noted[-1]).parent == short_tmp, noted  # the forkserver's folder, for the next run
    finally:  # after a failed check: end whatever is left, by pid
        tree = tree or {pid: procnet.started(pid) for pid in procnet.descendants(proc.pid)}
        proc.kill()
        procnet.kill_left(tree)
