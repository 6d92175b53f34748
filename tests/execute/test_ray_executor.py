"""The Ray executor: same numbers as the local executor, retries, failure reasons, resume after kill."""

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

import diskfull
import gates
import procnet
from ablab.cli import main
from conftest import interruptible, same_metrics, stored, tiny_study, wait_for_done

ray = pytest.importorskip("ray")
# a test that starts a private Ray instance takes tens of seconds on 2 cores: slow, as in test_ray_isolation.py
RAY_STARTS = pytest.mark.slow


@RAY_STARTS
def test_ray_gives_the_same_numbers_as_the_local_executor(write_study, tmp_path, capsys):
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.05]}, seeds={"replicates": 2}))
    assert main(["run", str(path), "--out", str(tmp_path / "local"), "--workers", "2", "--threads", "1"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray", "--workers", "2", "--threads", "1"]) == 0
    (ml, rl), (mr, rr) = stored(tmp_path / "local"), stored(tmp_path / "ray")
    assert set(rr.status) == {"done"} and rl.run.tolist() == rr.run.tolist()
    assert same_metrics(ml, mr)
    assert not ray.is_initialized()  # the private instance is shut down
    # a rerun on Ray skips everything already stored
    assert main(["run", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray", "--workers", "2"]) == 0
    assert "0 of 4 runs to do" in capsys.readouterr().err


def _kill_the_waiting_worker(gate, killed: list) -> None:
    """SIGKILL the Ray worker whose run holds at ``gate`` (its pid goes to ``killed``), then open the gate."""
    try:
        pid = gates.wait_for_waiting(gate, 1)[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    finally:
        gates.open_gate(gate)


@RAY_STARTS
def test_continued_runs_and_post_hoc_units_run_on_ray_with_the_local_numbers(write_study, tmp_path):
    """Checkpoints are staged by Ray workers and stored by the driver; an in-study continuation waits for its
    source; a post-hoc study over the result gives the local executor's numbers."""
    study = tiny_study(seeds={"replicates": 1, "vary": []})
    study["base"]["record"]["checkpoints"] = {"epochs": [1], "final": True}
    study["zip"] = {"label": ["trunk", "branch"], "init_from": [None, {"run": {"label": "trunk"}, "epoch": 1}]}
    path = write_study(study)
    assert main(["run", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray", "--workers", "2",
                 "--threads", "1"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "local"), "--threads", "1"]) == 0
    assert same_metrics(stored(tmp_path / "local")[0], stored(tmp_path / "ray")[0])
    assert not list((tmp_path / "ray").glob(".staging/*"))
    post = {"name": "post", "source": {"study": str(tmp_path / "ray")}, "members": "pairs",
            "base": {"evaluators": ["disagreement"], "device": "cpu"}}
    post_path = write_study(post, "post.yaml")
    assert main(["run", str(post_path), "--out", str(tmp_path / "pr"), "--executor", "ray", "--workers", "2"]) == 0
    assert main(["run", str(post_path), "--out", str(tmp_path / "pl")]) == 0
    assert same_metrics(stored(tmp_path / "pl")[0], stored(tmp_path / "pr")[0])
    assert len(stored(tmp_path / "pr")[1]) == 2


@RAY_STARTS
@pytest.mark.parametrize("retries, expect", [(2, {"done"}), (0, {"done", "failed"})], ids=["retried", "no-retries"])
def test_a_dead_ray_worker_is_retried_then_failed_with_the_reason(retries, expect, own_code_sandbox, write_study,
                                                                  tmp_path, capsys):
    gate = tmp_path / "gate"  # the first run holds there until its worker is killed
    study = tiny_study(imports=[gates.install(tmp_path)], seeds={"replicates": 1},
                       grid={"optimizer.lr": [0.1, 0.05]})
    study["base"]["model"] = {"name": "gated_mlp", "gate": str(gate)}
    out = tmp_path / "r"
    killed: list[int] = []
    t = threading.Thread(target=_kill_the_waiting_worker, args=(gate, killed))
    t.start()
    code = main(["run", str(write_study(study)), "--out", str(out), "--executor", "ray", "--workers", "1",
                 "--max-retries", str(retries)])
    t.join()
    assert killed, "no Ray worker was found to kill"
    _, runs = stored(out)
    assert set(runs.status) == expect
    if "failed" in expect:
        assert code == 1
        error = runs.set_index("status").loc["failed", "error"]
        assert "Ray task failed" in error and "Worker" in error  # the reason is stored
    else:
        assert code == 0
    capsys.readouterr()


def test_without_ray_the_executor_says_how_to_install(monkeypatch, write_study, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    assert main(["run", str(write_study(tiny_study())), "--out", str(tmp_path / "r"), "--executor", "ray"]) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@RAY_STARTS
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_resume_after_the_ray_driver_is_killed(sig, own_code_sandbox, write_study, tmp_path, capsys):
    # the first learning rate's 2 runs finish; the others hold mid-run at the gate when the signal comes
    gate = tmp_path / "gate"
    study = tiny_study(imports=[gates.install(tmp_path)], seeds={"replicates": 2},
                       zip={"optimizer.lr": [0.1, 0.05, 0.02], "model.gate": ["", str(gate), str(gate)]})
    study["base"]["model"] = {"name": "gated_mlp"}
    path = write_study(study)
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "ablab", "run", str(path), "--out", str(out), "--executor", "ray", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=interruptible)
    wait_for_done(out / "ablab.db", 2, proc, timeout=180)
    gates.wait_for_waiting(gate, 1, proc)
    ray_processes = {pid: procnet.started(pid) for pid in procnet.descendants(proc.pid)}
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    if sig == signal.SIGINT:  # a clean stop: exit 130, Ray shut down, no run left 'running'
        assert code == 130
        left = procnet.wait_gone(ray_processes, timeout_s=60)
        assert not left, {pid: procnet.comm(pid) for pid in left}
    _, before = stored(out)
    if sig == signal.SIGINT:
        assert "running" not in set(before.status)
    finished = before[before.status == "done"].set_index("run").finished.to_dict()
    assert len(finished) == 2
    gates.open_gate(gate)
    assert main(cmd[3:]) == 0, capsys.readouterr().err  # the same command, resumed in this process
    metrics, runs = stored(out)
    assert set(runs.status) == {"done"} and len(runs) == 6
    for run, t in finished.items():
        assert runs.set_index("run").loc[run, "finished"] == t
    assert not metrics.duplicated(["run", "step", "split", "name"]).any()
    assert not ray.is_initialized()
    capsys.readouterr()


@pytest.mark.slow
def test_a_full_disk_on_ray_stops_the_study_charges_no_run_and_the_same_command_resumes(
        own_code_sandbox, monkeypatch, write_study, tmp_path, capsys):
    """tests/execute/test_disk_full.py's case on Ray: a worker's staged write fails with ENOSPC, exit 74."""
    import ablab.train.result as result_module

    monkeypatch.setattr(result_module, "write_atomic", result_module.write_atomic)  # the module patches it here
    diskfull.fill(tmp_path)
    study = tiny_study(imports=[diskfull.install(tmp_path)], grid={"optimizer.lr": [0.1, 0.05]},
                       seeds={"replicates": 1})
    study["base"]["record"]["checkpoints"] = {"final": True}
    out = tmp_path / "r"
    cmd = ["run", str(write_study(study)), "--out", str(out), "--executor", "ray", "--workers", "2", "--threads", "1"]
    assert main(cmd) == 74
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "the disk is full; free space, then run the same command again" in errors[0] and str(out) in errors[0]
    _, runs = stored(out)
    assert set(runs.status) == {"pending"} and set(runs.attempts) == {0}  # back to pending, nothing charged
    assert not ray.is_initialized()

    diskfull.free(tmp_path)
    assert main(cmd) == 0, capsys.readouterr().err[-3000:]
    _, runs = stored(out)
    assert set(runs.status) == {"done"} and set(runs.attempts) == {1} and len(runs) == 2
    capsys.readouterr()


def test_an_unreachable_head_is_one_message_and_nothing_is_written(write_study, tmp_path, capsys):
    with socket.socket() as closed:  # a port of this machine that nothing listens on, held for the test
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        code = main(["run", str(write_study(tiny_study())), "--out", str(tmp_path / "r"), "--executor", "ray",
                     "--address", address])
    err = capsys.readouterr().err
    assert code == 2, err  # the address given names no cluster: fix it and rerun (the store is not at fault)
    assert err.startswith(f"error: Ray address {address}: no Ray head answers there (Connection refused)")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    assert not ray.is_initialized()
