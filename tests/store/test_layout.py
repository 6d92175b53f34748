"""ablab.store.layout: where a results directory's files lie, and how a finished run's files are placed."""

import json
from pathlib import Path

import pytest

from ablab.errors import StoreError, StoreIOError
from ablab.store import layout
from ablab.train.result import Artifact


def test_paths_of_a_results_directory(tmp_path):
    assert layout.artifact_path(tmp_path, "abc", "checkpoint_e0001.pt") == tmp_path / "runs" / "abc" / "checkpoint_e0001.pt"
    assert layout.staging_dir(tmp_path, "abc") == tmp_path / ".staging" / "abc"


def test_staged_files_are_moved_and_in_memory_ones_written(tmp_path):
    staged = layout.staging_dir(tmp_path, "abc") / "predictions_test_e0001.npy"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"staged bytes")
    records = [Artifact("predictions_test_e0001.npy", "predictions", path=str(staged)),
               Artifact("probe.json", "probe", data=b'{"a": 1}')]
    layout.place_run_files(tmp_path, "abc", {"spec": {"x": 1}, "code_version": "v"}, records)
    folder = tmp_path / "runs" / "abc"
    assert sorted(p.name for p in folder.iterdir()) == ["predictions_test_e0001.npy", "probe.json", "spec.json"]
    assert (folder / "predictions_test_e0001.npy").read_bytes() == b"staged bytes" and not staged.exists()
    assert (folder / "probe.json").read_bytes() == b'{"a": 1}'
    assert json.loads((folder / "spec.json").read_text()) == {"spec": {"x": 1}, "code_version": "v"}


def test_a_failed_placement_is_one_io_error_naming_the_file(tmp_path, monkeypatch):
    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout, "write_atomic", full_disk)
    with pytest.raises(StoreIOError, match=r"runs/abc/spec\.json: the disk is full"):
        layout.place_run_files(tmp_path, "abc", {}, [])


def test_staging_and_unfinished_run_folders_are_removed(tmp_path):
    for run in ("done1", "pending1"):
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "spec.json").write_text("{}")
    (layout.staging_dir(tmp_path, "pending1")).mkdir(parents=True)
    (layout.staging_dir(tmp_path, "pending1") / "x.npy").write_bytes(b"half")
    layout.remove_run_dirs(tmp_path, {"pending1", "never-stored"})
    layout.reset_staging(tmp_path)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["done1"]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_a_results_path_that_cannot_hold_a_store_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        layout.require_results_path(tmp_path / "notes.txt" / "results")
    (tmp_path / "r" / "ablab.db").mkdir(parents=True)
    with pytest.raises(StoreError, match="is a directory, not a results database"):
        layout.require_results_path(tmp_path / "r")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "ablab.db").write_bytes(b"")
    with pytest.raises(StoreError, match=r"is empty \(0 bytes\)"):
        layout.require_store_file(tmp_path / "empty")
    with pytest.raises(StoreError, match="no ablab.db"):
        layout.require_store_file(tmp_path / "notes-folder-missing")


def test_noted_temp_dirs_of_a_gone_process_go_at_the_next_start_those_of_a_live_one_stay(tmp_path):
    import subprocess
    import sys

    from ablab.store import layout

    root = tmp_path / "results"
    layout.reset_staging(root)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid_gone = int(gone.stdout)
    killed, mine, foreign = tmp_path / "pymp-killed", tmp_path / "pymp-mine", tmp_path / "elsewhere"
    for folder in (killed, mine, foreign):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "listener-x").write_text("")
    (foreign / "link").symlink_to(killed)
    layout.note_temp_dir(root, mine)  # this process: alive
    with open(root / layout.STAGING / layout.TEMP_DIRS, "a") as notes:  # as a killed driver noted them
        notes.write(f"{pid_gone} {foreign / 'link'}\n{pid_gone} {killed}\n{pid_gone} relative/path\nnot a line\n")
    layout.reset_staging(root)
    assert not killed.exists()
    assert (mine / "sub" / "listener-x").exists() and (foreign / "link").is_symlink()  # a link is never followed
    assert list((root / layout.STAGING).iterdir()) == []  # the notes went with the staging folder
