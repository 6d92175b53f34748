import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import gates
import procnet
from ablab.cli import main
from conftest import interruptible, same_metrics, status_counts, stored, tiny_study, wait_for_done


def test_failed_run_is_stored_and_the_study_goes_on(monkeypatch, write_study, tmp_path, capsys):
    from ablab.train import objectives

    real_step = objectives.StandardStep.step

    def flaky_step(self, model, forward, optimizer, *args):
        if optimizer.param_groups[0]["momentum"] == 0.5:
            raise RuntimeError("simulated crash in one variant")
        return real_step(self, model, forward, optimizer, *args)

    monkeypatch.setattr(objectives.StandardStep, "step", flaky_step)
    study = tiny_study(grid={"optimizer.momentum": [0.9, 0.5]}, seeds={"replicates": 1})
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 1  # not everything finished
    _, runs = stored(out)
    by = runs.set_index("label")
    assert by.loc["optimizer.momentum=0.9", "status"] == "done"
    assert by.loc["optimizer.momentum=0.5", "status"] == "failed"
    assert "simulated crash in one variant" in by.loc["optimizer.momentum=0.5", "error"]
    # the rerun retries the failed run (the bug is "fixed") and keeps the done one
    monkeypatch.setattr(objectives.StandardStep, "step", real_step)
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


LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and forkserver are the Linux start methods")


def _autograd_device_threads_running() -> bool:
    from ablab.execute.local import AUTOGRAD_DEVICE_THREAD, thread_names

    return any(n.startswith(AUTOGRAD_DEVICE_THREAD) for n in thread_names() or [])


@LINUX_ONLY
def test_workers_are_forked_only_when_that_is_safe(monkeypatch):
    import torch

    import ablab.execute.local as local

    if _autograd_device_threads_running():  # a GPU machine after an earlier test's backward
        assert local.start_method(1) == "forkserver"
        monkeypatch.setattr(local, "thread_names", lambda: ["python"])
    assert local.start_method(1) == "fork"  # warm copies of the driver
    assert local.start_method(2) == "forkserver"  # libgomp hangs in a forked child that uses >1 thread
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_initialized", lambda: True)
        assert local.start_method(1) == "forkserver"  # a forked child cannot use the driver's CUDA context
    with monkeypatch.context() as m:  # a backward on a GPU machine started autograd's device threads
        m.setattr(local, "thread_names", lambda: ["python", "pt_autograd_0", "pt_autograd_1"])
        assert local.start_method(1) == "forkserver"
    with monkeypatch.context() as m:  # threads that cannot be listed may be anything
        m.setattr(local, "thread_names", lambda: None)
        assert local.start_method(1) == "forkserver"


def _run_named_thread(name: bytes, started: threading.Event, stop: threading.Event) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) == 0  # PR_SET_NAME: this thread's OS name
    started.set()
    stop.wait(30)


@LINUX_ONLY
def test_a_running_autograd_device_thread_is_seen_in_the_process(monkeypatch):
    import torch

    from ablab.execute.local import start_method, thread_names

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    if _autograd_device_threads_running():
        pytest.skip("this process has real autograd device threads (a GPU machine): the fake adds nothing")
    started, stop = threading.Event(), threading.Event()
    fake = threading.Thread(target=_run_named_thread, args=(b"pt_autograd_0", started, stop), daemon=True)
    fake.start()
    try:
        assert started.wait(10)
        assert "pt_autograd_0" in thread_names()
        assert start_method(1) == "forkserver"
    finally:
        stop.set()
        fake.join(30)
    deadline = time.time() + 10  # a joined thread's /proc entry can linger a moment on a loaded machine
    while "pt_autograd_0" in thread_names() and time.time() < deadline:
        time.sleep(0.05)
    assert "pt_autograd_0" not in thread_names() and start_method(1) == "fork"


_TRAIN_THEN_STUDY = """
import ctypes, json, sys, threading
sys.path.insert(0, {tests!r})
import ablab.execute.local as local
from ablab.execute import run_study
from ablab.spec import RunSpec, expand, load_study
from ablab.train.loop import train
from conftest import TINY_BASE

assert train(RunSpec.model_validate(TINY_BASE)).status == "done"  # autograd has run in this process
if {fake_threads}:  # what that backward leaves behind on a machine with a GPU: a thread named so
    started = threading.Event()
    def device_thread():
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b"pt_autograd_0"), 0, 0, 0)  # PR_SET_NAME
        started.set()
        threading.Event().wait(600)
    threading.Thread(target=device_thread, daemon=True).start()
    assert started.wait(10)
chosen = []
real = local.start_method
local.start_method = lambda threads: chosen.append(real(threads)) or chosen[-1]
study = load_study({path!r})
summary = run_study(study, {path!r}, expand(study, {path!r}), {out!r}, workers=2, threads=1, tty=False)
print(json.dumps({{"method": chosen, "counts": summary.counts, "threads": local.thread_names()}}))
"""


@LINUX_ONLY
@pytest.mark.parametrize("fake_threads", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["as_is", "autograd_device_threads"])
def test_a_process_that_trained_then_runs_a_study_with_workers(fake_threads, write_study, tmp_path, capsys):
    """Issue 10, item 2: the Python API after a run in the same process (a notebook, the test suite).
    On a GPU machine that first backward starts autograd's device threads; a faked one stands in
    for them on the CPU. Either way the workers' numbers equal a sequential run's."""
    import json

    import torch

    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.05]}, seeds={"replicates": 1}))
    assert main(["run", str(path), "--out", str(tmp_path / "seq"), "--threads", "1"]) == 0
    tests = str(Path(__file__).resolve().parents[1])
    code = _TRAIN_THEN_STUDY.format(tests=tests, path=str(path), out=str(tmp_path / "par"), fake_threads=fake_threads)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["counts"] == {"done": 2}
    # with a CUDA device, that first backward (on CPU tensors) started autograd's device threads
    if fake_threads or torch.cuda.is_available():
        assert report["method"] == ["forkserver"], report["threads"]
    (ms, _), (mp_, rp) = stored(tmp_path / "seq"), stored(tmp_path / "par")
    assert set(rp.status) == {"done"} and same_metrics(ms, mp_)
    capsys.readouterr()


def test_forkserver_workers_with_two_threads_match_sequential(write_study, tmp_path, capsys):
    # 2 threads per run: the forkserver path (fork would hang in OpenMP); same numbers as in-process
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.05]}, seeds={"replicates": 1}))
    assert main(["run", str(path), "--out", str(tmp_path / "seq"), "--threads", "2"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "par"), "--workers", "2", "--threads", "2"]) == 0
    (ms, rs), (mp_, rp) = stored(tmp_path / "seq"), stored(tmp_path / "par")
    assert set(rp.status) == {"done"} and set(rp.device) == {"cpu (2 threads)"}
    assert same_metrics(ms, mp_)
    capsys.readouterr()


def test_a_temporary_folder_too_deep_for_the_forkserver_socket_is_one_clear_error(write_study, tmp_path):
    """The forkserver's socket lies in a ``pymp-*`` folder under TMPDIR; Linux takes at most 107 bytes: exit 2
    naming the folder and the ways out, no traceback, no run charged (the same command resumes with --threads 1)."""
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.05]}, seeds={"replicates": 1}))
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    out = tmp_path / "r"
    proc = _ablab("run", str(path), "--out", str(out), "--workers", "2", "--threads", "2", tmp=deep)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and f"the temporary folder {deep} is too deep" in err and "--threads 1" in err
    assert status_counts(out / "ablab.db").get("done", 0) == 0 and "failed" not in status_counts(out / "ablab.db")
    assert main(["run", str(path), "--out", str(out), "--workers", "2", "--threads", "1"]) == 0
    assert set(stored(out)[1].status) == {"done"}


THREADS = [1, pytest.param(2, marks=pytest.mark.slow)]  # forked workers; forkserver workers


def _gated_study(tmp_path: Path, gated: list[bool], gate: Path | None = None, **overrides) -> tuple[dict, Path]:
    """``tiny_study`` on the gated model (tests/gates.py), one variant of the learning rate per entry of
    ``gated``: those runs hold mid-training until the test opens the gate it returns (``gate``, else
    ``tmp_path/gate``; the gate's path is part of the runs' ids)."""
    gate = gate or tmp_path / "gate"
    lrs = [0.1, 0.05, 0.02, 0.01][: len(gated)]
    study = tiny_study(imports=[gates.install(tmp_path)], zip={"optimizer.lr": lrs,
                       "model.gate": [str(gate) if g else "" for g in gated]}, **overrides)
    study["base"]["model"] = {"name": "gated_mlp"}
    return study, gate


def _kill_one_waiting_worker(gate: Path, killed: list[int], study_ended: threading.Event) -> None:
    """Once two workers hold mid-run at ``gate``, SIGKILL one of them (its pid goes to ``killed``), then open it."""
    try:
        pids = gates.wait_for_waiting(gate, 2, stop=study_ended)
        if len(pids) >= 2:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    finally:
        gates.open_gate(gate)


def _run_killing_one_worker(study: dict, gate: Path, write_study, out: Path, threads: int, capsys) -> list[int]:
    """Run ``study`` with 2 workers in this process while one worker is killed mid-run; the killed pids."""
    killed: list[int] = []
    study_ended = threading.Event()
    t = threading.Thread(target=_kill_one_waiting_worker, args=(gate, killed, study_ended))
    t.start()
    try:
        code = main(["run", str(write_study(study)), "--out", str(out), "--workers", "2", "--threads", str(threads)])
    finally:
        study_ended.set()
        t.join()
    assert code == 0, capsys.readouterr().err[-3000:]
    return killed


@pytest.mark.parametrize("threads", THREADS)
def test_a_killed_worker_is_replaced_and_its_run_retried(threads, own_code_sandbox, write_study, tmp_path, capsys):
    study, gate = _gated_study(tmp_path, [True, True, True], seeds={"replicates": 2})
    out = tmp_path / "r"
    killed = _run_killing_one_worker(study, gate, write_study, out, threads, capsys)
    assert killed, "no worker was found to kill"
    _, runs = stored(out)
    assert set(runs.status) == {"done"} and len(runs) == 6
    assert sorted(runs.attempts) == [1, 1, 1, 1, 1, 2]  # the killed worker's run ran again, charged once
    capsys.readouterr()


def _ablab(*args, tmp: Path | None = None, **kw):
    """``python -m ablab ARGS`` as a child; with ``tmp``, its temporary folder (TMPDIR) is that one."""
    env = {**os.environ, "TMPDIR": str(tmp)} if tmp else None
    return subprocess.Popen([sys.executable, "-m", "ablab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible, env=env, **kw)


def _left_in(tmp: Path) -> list[str]:
    """What the processes given ``tmp`` as TMPDIR left there (torch's compile cache, kept by design, aside)."""
    return sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_"))


class _Reference:
    """The resume tests' study run once without a stop, per thread count, into a folder of this module: all
    the tests' runs hold at one gate, so every test's study has the same run ids as this reference."""

    def __init__(self, folder: Path):
        self.folder, self.gate, self._stored = folder, folder / "gate", {}

    def metrics(self, path: Path, threads: int):
        """The stored metrics of the study at ``path`` run from scratch with ``threads`` (the gate open)."""
        if threads not in self._stored:
            out = self.folder / f"fresh-{threads}"
            assert main(["run", str(path), "--out", str(out), "--threads", str(threads)]) == 0
            self._stored[threads] = stored(out)[0]
        return self._stored[threads]


@pytest.fixture(scope="module")
def resume_reference(tmp_path_factory) -> _Reference:
    return _Reference(tmp_path_factory.mktemp("resume"))


@pytest.mark.parametrize("sig,workers,threads", [
    (signal.SIGKILL, 1, 1), (signal.SIGKILL, 2, 1), (signal.SIGINT, 1, 1), (signal.SIGINT, 2, 1), (signal.SIGTERM, 1, 1),
    (signal.SIGTERM, 2, 1), pytest.param(signal.SIGKILL, 2, 2, marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, 2, 2, marks=pytest.mark.slow), pytest.param(signal.SIGTERM, 2, 2, marks=pytest.mark.slow),
], ids=["kill-9", "kill-9-2-workers", "ctrl-c", "ctrl-c-2-workers", "sigterm", "sigterm-2-workers",
        "kill-9-2-forkserver-workers", "ctrl-c-2-forkserver-workers", "sigterm-2-forkserver-workers"])
def test_resume_after_the_driver_is_killed(sig, workers, threads, resume_reference, own_code_sandbox, write_study,
                                          tmp_path, short_tmp, capsys):
    """... and no temporary folder outlives the study: the killed driver's (multiprocessing's ``pymp-*``,
    the forkserver's socket) goes at the resume in that results directory."""
    # the first learning rate's 2 runs finish; the others hold mid-run at the gate when the signal comes
    gate = resume_reference.gate
    gates.close_gate(gate)
    study, _ = _gated_study(tmp_path, [False, True, True], gate=gate, seeds={"replicates": 2})
    path = write_study(study)
    out = tmp_path / "r"
    db = out / "ablab.db"
    tmp = short_tmp  # the children's own temporary folder: whatever they leave shows
    proc = _ablab("run", str(path), "--out", str(out), "--workers", str(workers), "--threads", str(threads), tmp=tmp)
    wait_for_done(db, 2, proc)
    gates.wait_for_waiting(gate, 1, proc)
    started = {pid: procnet.started(pid) for pid in procnet.descendants(proc.pid)}
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    counts = status_counts(db)
    assert counts.get("done", 0) == 2
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert proc.returncode == (130 if sig == signal.SIGINT else 143) and "resume" in err, err
        assert "Traceback" not in err
        assert "running" not in counts  # interrupted runs were put back to pending
        if workers > 1:
            assert started
            assert not procnet.wait_gone(started, timeout_s=30)  # the driver stopped its workers
    else:
        assert proc.returncode == -signal.SIGKILL
        assert not procnet.wait_gone(started, timeout_s=30)  # its workers (and forkserver) died with it
    before = stored(out)[1].set_index("run")
    finished_before = before[before.status == "done"].finished.to_dict()
    gates.open_gate(gate)

    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), "--threads", str(threads)]) == 0, capsys.readouterr().err
    assert _left_in(tmp) == []  # the killed driver's temporary folders went at the resume
    metrics, runs = stored(out)
    assert len(runs) == 6 and set(runs.status) == {"done"}
    after = runs.set_index("run")
    for run, finished in finished_before.items():
        assert after.loc[run, "finished"] == finished  # finished runs were skipped, not redone
    per_run = metrics.groupby("run").size()
    assert per_run.nunique() == 1  # every run has exactly one copy of each record
    assert not metrics.duplicated(["run", "step", "split", "name"]).any()

    assert same_metrics(resume_reference.metrics(path, threads), metrics)
    capsys.readouterr()


@pytest.mark.parametrize("method", ["terminate", "recover"])
def test_a_stopped_pool_has_ended_its_manager_thread_before_the_driver_goes_on(method):
    """An interrupted driver stops its pool and exits; a pool shut down without waiting still has its
    manager thread closing the wake-up pipe, and the interpreter's exit hook then wrote to the closed
    descriptor ('OSError: Bad file descriptor' traceback after the 'resume' message, once in CI)."""
    import multiprocessing as mp

    from ablab.execute.local import _Pool

    backend = _Pool(mp.get_context("fork"), 2, 1, store=None)
    try:
        futures = [backend.pool.submit(time.sleep, 60) for _ in range(2)]
        deadline = time.monotonic() + 30
        while not all(f.running() for f in futures) and time.monotonic() < deadline:
            time.sleep(0.01)
        thread, procs = backend.pool._executor_manager_thread, list(backend.pool._processes.values())
        assert thread.is_alive() and len(procs) == 2
        if method == "terminate":
            backend.terminate()
        else:  # a worker dies; the broken pool is replaced
            os.kill(procs[0].pid, signal.SIGKILL)
            with pytest.raises(Exception):
                futures[0].result(timeout=30)
            backend.recover()
        assert not thread.is_alive()
        assert all(not p.is_alive() for p in procs)
    finally:
        backend.terminate()
        backend.close()


@pytest.mark.parametrize("threads", THREADS)
def test_only_the_run_whose_worker_died_is_charged(threads, own_code_sandbox, write_study, tmp_path, capsys):
    study, gate = _gated_study(tmp_path, [True], seeds={"replicates": 2})  # both runs in flight at the kill
    out = tmp_path / "r"
    killed = _run_killing_one_worker(study, gate, write_study, out, threads, capsys)
    assert killed, "no worker was found to kill"
    _, runs = stored(out)
    assert list(runs.status) == ["done", "done"]
    # the killed worker's run started twice; the other run's start, cut short by the broken pool, does not count
    assert sorted(runs.attempts) == [1, 2]
    capsys.readouterr()
