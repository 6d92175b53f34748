"""ablab.files: atomic writes, their temporary files removed on a failed write, and those a kill left at the next run."""

import errno
import os
import subprocess
import sys

import pytest

from ablab.cli import main
from ablab.files import pid_alive, remove_stale_temp_files, temp_path, write_atomic
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

    monkeypatch.setattr(os, failing, full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert target.read_bytes() == b"old"


def test_a_write_that_fails_midway_leaves_no_temp_file_and_the_old_content(tmp_path):
    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "text, not bytes")  # the file object refuses it after the temp file was opened
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert target.read_bytes() == b"old"


def test_write_atomic_makes_missing_folders_and_replaces_the_content(tmp_path):
    target = tmp_path / "runs" / "abc" / "spec.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["spec.json"]


def test_temp_names_are_those_remove_stale_temp_files_recognises(tmp_path):
    target = tmp_path / "index.html"
    assert temp_path(target) == tmp_path / f".index.html.tmp-{os.getpid()}"
    dead = _dead_pid()
    stale = temp_path(target).with_name(f".index.html.tmp-{dead}")
    stale.write_bytes(b"partial")
    temp_path(target).write_bytes(b"mine, being written")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert temp_path(target).exists()


def test_pid_alive():
    assert pid_alive(os.getpid()) and pid_alive(os.getppid())
    assert not pid_alive(_dead_pid())
    assert pid_alive(0) and pid_alive(-1)  # not process ids: never reason to remove a file
    assert not pid_alive(2**80)  # larger than any pid


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
