"""Issue 26: worker processes capped at the runs to do; limits that were silently accepted are refused."""

import pytest

from ablab.cli import main
from conftest import tiny_study


def test_more_workers_than_runs_start_one_worker_per_run(write_study, tmp_path, capsys, monkeypatch):
    from ablab.execute import local

    started = []
    real = local.run_parallel

    def counting(store, todo, view, workers, threads):
        started.append(workers)
        return real(store, todo, view, workers, threads)

    monkeypatch.setattr(local, "run_parallel", counting)
    study = tiny_study(seeds={"replicates": 2}, execute={"pack": "off"})  # packed, the two seeds are one unit
    study["base"]["epochs"] = 1
    assert main(["run", str(write_study(study)), "--out", str(tmp_path / "r"), "--workers", "3", "--threads", "1"]) == 0
    assert started == [2]


def test_more_workers_than_cores_is_said_in_one_line(write_study, tmp_path, capsys, monkeypatch):
    import os

    from ablab.execute import local

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(local, "run_parallel", lambda *a: None)  # nothing trained: only the note is looked at
    main(["run", str(write_study(tiny_study())), "--out", str(tmp_path / "r"), "--workers", "48", "--threads", "1"])
    notes = [line for line in capsys.readouterr().err.splitlines() if "--workers 48" in line]
    assert len(notes) == 1 and "4 cores" in notes[0]


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("flag, value, message", [
    ("--max-artifact-gb", "nan", "--max-artifact-gb must be a positive finite number, got nan"),
    ("--max-artifact-gb", "inf", "--max-artifact-gb must be a positive finite number, got inf"),
    ("--max-artifact-gb", "-1", "--max-artifact-gb must be a positive finite number, got -1"),
    ("--max-artifact-gb", "0", "--max-artifact-gb must be a positive finite number, got 0"),
    ("--max-runs", "0", "--max-runs must be at least 1, got 0"),
    ("--max-runs", "-5", "--max-runs must be at least 1, got -5"),
])
def test_a_limit_that_would_turn_its_guard_off_is_refused(write_study, tmp_path, capsys, command, flag, value, message):
    out = tmp_path / "r"
    argv = [command, str(write_study(tiny_study())), flag, value] + (["--out", str(out)] if command == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not out.exists()
