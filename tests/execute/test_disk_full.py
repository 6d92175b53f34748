"""A full disk while workers write their artifacts is the study's I/O failure: exit 74 with one message,
no run charged, and the same command resumes once space is freed."""

import sqlite3
import sys

import pytest

import ablab.train.result as result_module
import diskfull
from ablab import plugins
from ablab.cli import main
from conftest import stored, tiny_study

@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_stops_the_study_charges_no_run_and_the_same_command_resumes(
        workers, monkeypatch, write_study, tmp_path, capsys):
    # what importing the study's module changes in this process is undone after the test
    monkeypatch.setattr(result_module, "write_atomic", result_module.write_atomic)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(plugins, "_SEARCH_PATH", list(plugins._SEARCH_PATH))
    monkeypatch.delitem(sys.modules, "full_disk", raising=False)
    diskfull.fill(tmp_path)  # every artifact write fails, as on a full disk
    study = tiny_study(imports=[diskfull.install(tmp_path)], grid={"optimizer.lr": [0.1, 0.05]},
                       seeds={"replicates": 1})
    study["base"]["record"]["checkpoints"] = {"final": True}
    cmd = ["run", str(write_study(study)), "--out", str(tmp_path / "r"), "--workers", str(workers), "--threads", "1"]

    assert main(cmd) == 74
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err  # one message after the progress lines
    err = errors[0]
    assert "the disk is full; free space, then run the same command again" in err and "No space left" in err
    assert str(tmp_path / "r") in err  # names the file it could not write
    _, runs = stored(tmp_path / "r")
    assert set(runs.status) == {"pending"} and set(runs.attempts) == {0}  # nothing charged to the runs
    with sqlite3.connect(tmp_path / "r" / "ablab.db") as con:
        assert con.execute("SELECT COUNT(*) FROM failures").fetchone() == (0,)

    diskfull.free(tmp_path)
    assert main(cmd) == 0, capsys.readouterr().err[-3000:]
    _, runs = stored(tmp_path / "r")
    assert set(runs.status) == {"done"} and set(runs.attempts) == {1} and len(runs) == 2
    capsys.readouterr()
