"""Checkpoints read from another results directory (``init_from.study``, a post-hoc ``source``) are checked by
``validate``: missing, damaged or not a regular file is exit 2 naming the file, before anything runs."""

import copy
import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

import ablab
from ablab.cli import main
from ablab.errors import StoreError
from ablab.execute.files import checkpoint_file
from ablab.train.inputs import StoredFile, UnitFiles
from conftest import TINY_BASE


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished two-run study with a checkpoint at epoch 1 and a final one."""
    root = tmp_path_factory.mktemp("source")
    base = {**copy.deepcopy(TINY_BASE), "epochs": 2, "record": {"every_steps": 5, "eval_splits": ["test"],
                                                                 "checkpoints": {"epochs": [1], "final": True}}}
    (root / "src.yaml").write_text(yaml.safe_dump({"name": "src", "base": base, "seeds": {"replicates": 2}}))
    assert main(["run", str(root / "src.yaml"), "--out", str(root / "out"), "--threads", "1"]) == 0
    return root / "out"


@pytest.fixture
def copy_of(source, tmp_path) -> Path:
    shutil.copytree(source, tmp_path / "src")
    return tmp_path / "src"


def _checkpoint(results: Path, epoch: int) -> Path:
    store = ablab.load(results)
    try:
        arts = store.artifacts()
        row = arts[(arts.kind == "checkpoint") & (arts.epoch == epoch)].sort_values("run").iloc[0]
        return store.artifact_path(row.run, row["name"])
    finally:
        store.close()


def _continuation(tmp_path: Path, src: Path) -> Path:
    base = {**copy.deepcopy(TINY_BASE), "epochs": 2, "init_from": {"study": str(src), "run": {}, "epoch": 1}}
    spec = tmp_path / "cont.yaml"
    spec.write_text(yaml.safe_dump({"name": "cont", "base": base, "seeds": {"replicates": 2}}))
    return spec


def _posthoc(tmp_path: Path, src: Path) -> Path:
    spec = tmp_path / "pairs.yaml"
    spec.write_text(yaml.safe_dump({"name": "pairs", "source": {"study": str(src), "checkpoint": "final"},
                                    "members": "pairs", "base": {"evaluators": ["disagreement"],
                                                                 "eval_splits": ["test"], "device": "cpu"}}))
    return spec


def _missing(path: Path) -> None:
    path.unlink()


def _damaged(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGES = {"missing": (_missing, "missing"), "damaged": (_damaged, "sha256"), "fifo": (_fifo, "a FIFO"),
           "folder": (_folder, "a folder")}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", ["init_from", "post-hoc"])
def test_validate_refuses_a_source_checkpoint_that_cannot_be_read(kind, damage, copy_of, tmp_path, capsys):
    target = _checkpoint(copy_of, 1 if kind == "init_from" else 2)
    spec = _continuation(tmp_path, copy_of) if kind == "init_from" else _posthoc(tmp_path, copy_of)
    make, words = DAMAGES[damage]
    make(target)
    for argv in (["validate", str(spec), "--no-timing"], ["run", str(spec), "--out", str(tmp_path / "out")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and str(target) in err and words in err, err
        assert ("base.init_from" if kind == "init_from" else "source.study") in err
    assert not (tmp_path / "out").exists()


def test_a_fifo_in_a_checkpoint_s_place_is_refused_without_reading_it(copy_of):
    target = _checkpoint(copy_of, 1)
    _fifo(target)
    store = ablab.load(copy_of)
    try:
        run = store.artifacts().query("kind == 'checkpoint' and epoch == 1").sort_values("run").run.iloc[0]
        with pytest.raises(StoreError, match="a FIFO"):
            checkpoint_file(store, run, 1)
    finally:
        store.close()
    with pytest.raises(ValueError, match="a FIFO"):
        StoredFile("0" * 64, str(target)).read()
    assert StoredFile("0" * 64, str(target)).in_memory().data is None


def test_a_checkpoint_that_fails_to_load_names_its_file(copy_of, tmp_path):
    """The forged-digest case: the file replaced and its digest in the index with it."""
    target = _checkpoint(copy_of, 1)
    forged = b"not a checkpoint at all"
    target.write_bytes(forged)
    digest = hashlib.sha256(forged).hexdigest()
    with pytest.raises(ValueError, match="cannot load the checkpoint") as caught:
        UnitFiles({("r", 1): StoredFile(digest, str(target))}).checkpoint("r", 1)
    assert str(target) in str(caught.value)
    con = sqlite3.connect(copy_of / "ablab.db")
    con.execute("UPDATE artifacts SET sha256=?, size=? WHERE name=? AND run=?",
                (digest, len(forged), target.name, target.parent.name))
    con.commit()
    con.close()
    spec = _continuation(tmp_path, copy_of)
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--threads", "1"]) == 1
    runs = ablab.load(tmp_path / "out").runs()
    failed = runs[runs.status == "failed"]
    assert len(failed) == 1 and str(target) in failed.error.iloc[0] and "cannot load the checkpoint" in failed.error.iloc[0]


def test_select_on_a_metric_no_run_recorded_says_it_is_missing_and_names_those_recorded(source, tmp_path, capsys):
    base = {**copy.deepcopy(TINY_BASE), "epochs": 2,
            "init_from": {"study": str(source), "select": {"metric": "test.acuracy", "k": 1}, "epoch": 1}}
    spec = tmp_path / "sel.yaml"
    spec.write_text(yaml.safe_dump({"name": "sel", "base": base}))
    assert main(["validate", str(spec), "--no-timing"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "base.init_from.select.metric" in err and "select.mode" not in err
    assert "recorded 'test.acuracy'" in err and "test.accuracy" in err and "did you mean 'test.accuracy'" in err
