"""The private Ray instance ablab starts is reachable from this machine only, and it stops with the study.

Ray's processes are found by pid (descendants of the driver), never by name; sockets by inode
(/proc/net/tcp{,6} against /proc/PID/fd)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import interruptible, status_counts, tiny_study
from procnet import alive, comm, descendants, is_loopback, kill_left, listening_of, started, wait_gone

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to list sockets")]


def _start_ray_study(write_study, tmp_path, group: bool) -> tuple[subprocess.Popen, Path]:
    study = tiny_study(grid={"optimizer.lr": [0.1, 0.05, 0.02]}, seeds={"replicates": 2})
    study["base"]["epochs"] = 60  # still training when the test looks and stops it
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "ablab", "run", str(write_study(study)), "--out", str(out), "--executor", "ray",
           "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a private instance, not a running one
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=interruptible, start_new_session=group)
    deadline = time.time() + 240
    while status_counts(out / "ablab.db").get("running", 0) < 2:  # both Ray workers are training
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the Ray study did not start in time"
        time.sleep(0.2)
    return proc, out


def _settled_listeners(driver: int, still_s: float = 1.5, timeout_s: float = 60) -> tuple[set, dict]:
    """The driver's descendants and every listening socket of them and the driver, once the agents have bound
    theirs: read until neither has changed for ``still_s`` (a loaded machine binds late; a fixed wait would
    then see too few sockets and pass for the wrong reason)."""
    deadline = time.time() + timeout_s
    seen, since = None, time.time()
    while True:
        pids = descendants(driver)
        now = (pids, listening_of(pids | {driver}))
        if now != seen:
            seen, since = now, time.time()
        elif time.time() - since >= still_s:
            return seen
        assert time.time() < deadline, "Ray's processes did not settle"
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_private_ray_listens_on_loopback_only_and_stops_with_the_study(how, write_study, tmp_path):
    proc, out = _start_ray_study(write_study, tmp_path, group=how == "ctrl-c")
    ray_pids, listening = _settled_listeners(proc.pid)
    names = {pid: comm(pid) for pid in ray_pids}
    assert len(ray_pids) >= 3 and proc.pid in listening  # GCS, raylet, workers; the driver's core worker listens
    exposed = {f"{pid} ({comm(pid)})": [a for a in addrs if not is_loopback(a[0])] for pid, addrs in listening.items()}
    assert not any(exposed.values()), exposed

    if how == "ctrl-c":  # a terminal's Ctrl-C reaches the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), err
    assert "Traceback" not in err
    deadline = time.time() + 5
    while time.time() < deadline and any(alive(p) for p in ray_pids):
        time.sleep(0.1)
    left = {pid: names[pid] for pid in ray_pids if alive(pid)}
    for pid in left:  # leave nothing behind for the next test, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"Ray processes outlived the study by 5 s: {left}"
    assert "running" not in status_counts(out / "ablab.db")


def test_nothing_of_the_private_ray_outlives_a_killed_driver_by_10_s(write_study, tmp_path):
    proc, out = _start_ray_study(write_study, tmp_path, group=False)
    ray_processes = {pid: started(pid) for pid in descendants(proc.pid)}  # GCS, raylet, both agents, workers
    names = {pid: comm(pid) for pid in ray_processes}
    assert any(n.startswith("ray::Dashboard") for n in names.values()), names  # the agent (comm: 15 characters)
    proc.kill()
    proc.wait()
    left = wait_gone(ray_processes, timeout_s=10)
    kill_left(left)  # leave nothing behind for the next test, then fail
    assert not left, f"Ray processes outlived a killed driver by 10 s: {[names[p] for p in left]}"
    proc.stderr.close()
