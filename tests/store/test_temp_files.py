"""Temporary files of atomic writes: removed on a failed write, and those a kill left removed at the next run."""

import errno
import os
import subprocess
import sys

import pytest

import ablab.store
from ablab.cli import main
from ablab.store import remove_stale_temp_files, write_atomic
from conftest import stored, tiny_study


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_temp_files_of_dead_writers_inside_the_directory_are_removed(tmp_path):
    root, dead = tmp_path / "r", _dead_pid()
    stale = [root / f".ablab.json.tmp-{dead}", root / "runs" / "abc" / f".final.pt.tmp-{dead}"]
    kept = [root / f".index.html.tmp-{os.getpid()}",  # this process is alive: it may be writing now
            root / f".x.tmp-{os.getppid()}",
            root / f"x.tmp-{dead}",  # not write_atomic's name (no leading dot)
            root / f".x.tmp-{dead}.csv",
            root / "runs" / "abc" / "final.pt"]
    outside = tmp_path / f".y.tmp-{dead}"
    for path in [*stale, *kept, outside]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    (root / "link").symlink_to(tmp_path, target_is_directory=True)  # not followed out of the directory

    assert sorted(remove_stale_temp_files(root)) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"partial" for p in [*kept, outside])


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_atomic_write_leaves_no_temp_file_and_the_old_content(failing, monkeypatch, tmp_path):
    target = tmp_path / "a.json"
    target.write_bytes(b"old")

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ablab.store.os, failing, full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert target.read_bytes() == b"old"


def test_a_run_removes_temp_files_a_killed_invocation_left(write_study, tmp_path, capsys):
    path, out = write_study(tiny_study(seeds={"replicates": 1})), tmp_path / "r"
    assert main(["run", str(path), "--out", str(out), "--threads", "1"]) == 0
    run = stored(out)[1].run[0]
    dead = _dead_pid()
    leftovers = [out / f".ablab.db.tmp-{dead}", out / "runs" / run / f".spec.json.tmp-{dead}"]
    for p in leftovers:
        p.write_bytes(b"partial")
    assert main(["run", str(path), "--out", str(out), "--threads", "1"]) == 0
    assert not any(p.exists() for p in leftovers)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    capsys.readouterr()
