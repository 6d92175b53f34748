"""Ctrl-C or SIGTERM landing while Python exits after a finished study: exit 130 / 143, as for one that
lands while it runs (was: the process died of the signal, -2 / -15, its exit work cut short).

The study imports a module whose ``atexit`` hook holds the driver's exit at a gate (tests/gates.py's
files) until the test has sent the signal: the signal lands during interpreter exit, the study
known to be finished, whatever the machine's speed.
"""

import signal
import subprocess
import sys

import pytest

import gates
from conftest import interruptible, status_counts, tiny_study

HOLD_EXIT = '''
import atexit
import os
import time
from pathlib import Path

DRIVER = os.getpid()  # imported by the driver first: forked workers never run the hook
GATE = Path({gate!r})


def hold():
    """Wait at the gate while the interpreter exits (after ablab's command returned)."""
    if os.getpid() != DRIVER:
        return
    Path(f"{{GATE}}.waiting-{{DRIVER}}").touch()
    while not GATE.exists():
        time.sleep(0.02)


atexit.register(hold)
'''


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_python_exits_after_a_finished_study_is_130_or_143(sig, code, write_study, tmp_path):
    gate = tmp_path / "exit-gate"
    (tmp_path / "hold_exit.py").write_text(HOLD_EXIT.format(gate=str(gate)))
    gates.close_gate(gate)
    path = write_study(tiny_study(imports=["hold_exit"], seeds={"replicates": 1}))
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "ablab", "run", str(path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    try:
        gates.wait_for_waiting(gate, 1, proc)  # the command returned; Python runs its exit hooks
        assert status_counts(out / "ablab.db") == {"done": 1}  # the study is finished and stored
        proc.send_signal(sig)
    finally:
        gates.open_gate(gate)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "tiny: 1 done" in stdout, stdout  # the finished study's summary was printed
    assert status_counts(out / "ablab.db") == {"done": 1}
