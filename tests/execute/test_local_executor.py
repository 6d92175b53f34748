import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ablab.cli import main
from conftest import interruptible, same_metrics, status_counts, stored, tiny_study, wait_for_done


def test_failed_run_is_stored_and_the_study_goes_on(monkeypatch, write_study, tmp_path, capsys):
    from ablab.train import objectives

    real_step = objectives.Standard.step

    def flaky_step(self, model, forward, optimizer, *args):
        if optimizer.param_groups[0]["momentum"] == 0.5:
            raise RuntimeError("simulated crash in one variant")
        return real_step(self, model, forward, optimizer, *args)

    monkeypatch.setattr(objectives.Standard, "step", flaky_step)
    study = tiny_study(grid={"optimizer.momentum": [0.9, 0.5]}, seeds={"replicates": 1})
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 1  # not everything finished
    _, runs = stored(out)
    by = runs.set_index("label")
    assert by.loc["optimizer.momentum=0.9", "status"] == "done"
    assert by.loc["optimizer.momentum=0.5", "status"] == "failed"
    assert "simulated crash in one variant" in by.loc["optimizer.momentum=0.5", "error"]
    # the rerun retries the failed run (the bug is "fixed") and keeps the done one
    monkeypatch.setattr(objectives.Standard, "step", real_step)
    done_before = stored(out)[1].set_index("label").loc["optimizer.momentum=0.9", "finished"]
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 0
    _, runs = stored(out)
    assert set(runs.status) == {"done"}
    assert runs.set_index("label").loc["optimizer.momentum=0.9", "finished"] == done_before
    capsys.readouterr()


def test_parallel_workers_give_the_same_numbers_as_sequential(write_study, tmp_path, capsys):
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.05]}, seeds={"replicates": 2}))
    # bitwise equality needs the same intra-op thread count: 2 workers on 2 cores get 1 thread each
    assert main(["run", str(path), "--out", str(tmp_path / "seq"), "--threads", "1"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "par"), "--workers", "2", "--threads", "1"]) == 0
    (ms, rs), (mp_, rp) = stored(tmp_path / "seq"), stored(tmp_path / "par")
    assert rs.run.tolist() == rp.run.tolist() and set(rp.status) == {"done"}
    assert same_metrics(ms, mp_)
    capsys.readouterr()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and forkserver are the Linux start methods")
def test_workers_are_forked_only_when_that_is_safe(monkeypatch):
    import torch

    from ablab.execute.local import start_method

    assert start_method(1) == "fork"  # warm copies of the driver
    assert start_method(2) == "forkserver"  # libgomp hangs in a forked child that uses >1 thread
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert start_method(1) == "forkserver"  # a forked child cannot use the driver's CUDA context


def test_forkserver_workers_with_two_threads_match_sequential(write_study, tmp_path, capsys):
    # 2 threads per run: the forkserver path (fork would hang in OpenMP); same numbers as in-process
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.05]}, seeds={"replicates": 1}))
    assert main(["run", str(path), "--out", str(tmp_path / "seq"), "--threads", "2"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "par"), "--workers", "2", "--threads", "2"]) == 0
    (ms, rs), (mp_, rp) = stored(tmp_path / "seq"), stored(tmp_path / "par")
    assert set(rp.status) == {"done"} and set(rp.device) == {"cpu (2 threads)"}
    assert same_metrics(ms, mp_)
    capsys.readouterr()


def _child_pids() -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"resource_tracker" not in cmdline:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find worker processes")
def test_a_killed_worker_is_replaced_and_its_run_retried(write_study, tmp_path, capsys):
    study = tiny_study(grid={"optimizer.lr": [0.1, 0.05, 0.02]}, seeds={"replicates": 2})
    study["base"]["epochs"] = 15
    out = tmp_path / "r"
    killed = []

    def killer():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            if (out / "ablab.db").exists():
                try:
                    con = sqlite3.connect(out / "ablab.db")
                    running = con.execute("SELECT COUNT(*) FROM runs WHERE status='running'").fetchone()[0]
                    con.close()
                except sqlite3.Error:
                    running = 0
                pids = _child_pids()
                if running and pids:
                    time.sleep(0.3)
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    code = main(["run", str(write_study(study)), "--out", str(out), "--workers", "2", "--threads", "1"])
    t.join()
    assert killed, "no worker was found to kill"
    _, runs = stored(out)
    assert code == 0 and set(runs.status) == {"done"}
    capsys.readouterr()


def _ablab(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "ablab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible, **kw)


@pytest.mark.parametrize("sig,workers", [(signal.SIGKILL, 1), (signal.SIGINT, 1), (signal.SIGINT, 2)],
                         ids=["kill-9", "ctrl-c", "ctrl-c-2-workers"])
def test_resume_after_the_driver_is_killed(sig, workers, write_study, tmp_path):
    study = tiny_study(grid={"optimizer.lr": [0.1, 0.05, 0.02]}, seeds={"replicates": 2})
    study["base"]["epochs"] = 8 * workers  # with 2 workers, the study must still be going at the signal
    path = write_study(study)
    out = tmp_path / "r"
    db = out / "ablab.db"
    proc = _ablab("run", str(path), "--out", str(out), "--workers", str(workers), "--threads", "1")
    wait_for_done(db, 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    counts = status_counts(db)
    assert 2 <= counts.get("done", 0) < 6
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "resume" in err
        assert "running" not in counts  # interrupted runs were put back to pending
    else:
        assert proc.returncode == -signal.SIGKILL
    before = stored(out)[1].set_index("run")
    finished_before = before[before.status == "done"].finished.to_dict()

    rerun = _ablab("run", str(path), "--out", str(out), "--threads", "1")
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    metrics, runs = stored(out)
    assert len(runs) == 6 and set(runs.status) == {"done"}
    after = runs.set_index("run")
    for run, finished in finished_before.items():
        assert after.loc[run, "finished"] == finished  # finished runs were skipped, not redone
    per_run = metrics.groupby("run").size()
    assert per_run.nunique() == 1  # every run has exactly one copy of each record
    assert not metrics.duplicated(["run", "step", "split", "name"]).any()

    fresh = _ablab("run", str(path), "--out", str(tmp_path / "fresh"), "--threads", "1")
    assert fresh.wait(timeout=300) == 0
    ref, _ = stored(tmp_path / "fresh")
    assert same_metrics(ref, metrics)
