"""Ctrl-C or SIGTERM before a study runs (imports, spec loading, validation): one line, no traceback."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ablab.cli
from ablab.cli import main
from conftest import interruptible, tiny_study


@pytest.mark.parametrize("stop,code", [(KeyboardInterrupt, 130), (ablab.cli.Terminated, 143)])
def test_an_interrupt_while_the_spec_loads_is_one_line(stop, code, monkeypatch, write_study, tmp_path, capsys):
    def interrupted_load(*args, **kwargs):
        raise stop()

    monkeypatch.setattr(ablab.cli, "_load", interrupted_load)
    spec, out = str(write_study(tiny_study())), str(tmp_path / "r")
    for argv in (["validate", spec], ["run", spec, "--out", out]):
        assert main(argv) == code
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert err.strip().startswith("interrupted" if code == 130 else "terminated")
    assert not (tmp_path / "r").exists()  # nothing was written


def _torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the child importing torch")
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_the_first_seconds_prints_no_traceback(sig, code, write_study):
    path = write_study(tiny_study())
    proc = subprocess.Popen([sys.executable, "-m", "ablab", "validate", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    deadline = time.time() + 60
    while not _torch_loaded(proc.pid) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)  # torch is being imported: the spec is not validated yet
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
