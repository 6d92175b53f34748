"""Every bad input gives one clear message naming the file and the field, exit code 2, nothing written."""

from pathlib import Path

import pytest

from ablab.cli import main
from conftest import tiny_study, run_refused


def _run(write_study, study, tmp_path, capsys, *extra):
    return run_refused(write_study, study, tmp_path, capsys, *extra)


def _with(path: str, value):
    study = tiny_study()
    node = study
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return study


CASES = [
    ("unknown top-level key", {**tiny_study(), "gird": {}}, "gird", "unknown key"),
    ("unknown base key", _with("base.epoch", 3), "base.epoch", "Did you mean 'epochs'"),
    ("unknown record key", _with("base.record.every", 3), "base.record.every", "unknown key"),
    ("unknown component param", _with("base.model.width", [3]), "base.model.width", "Did you mean 'widths'"),
    ("unknown model", _with("base.model", {"name": "resnet9000"}), "base.model.name", "Known: "),
    ("unknown optimizer, closest", _with("base.optimizer.name", "adamm"), "base.optimizer.name", "Did you mean 'adam'"),
    ("unknown activation", _with("base.model.activation", "relux"), "base.model", "relu"),
    ("wrong type", _with("base.batch_size", "many"), "base.batch_size", "integer"),
    ("wrong type in component", _with("base.model.dropout", "lots"), "base.model.dropout", "number"),
    ("zero lr", _with("base.optimizer.lr", 0), "base.optimizer.lr", "greater than 0"),
    ("negative lr", _with("base.optimizer.lr", -0.1), "base.optimizer.lr", "greater than 0"),
    ("zero epochs", _with("base.epochs", 0), "base.epochs", "greater than 0"),
    ("negative batch size", _with("base.batch_size", -8), "base.batch_size", "greater than 0"),
    ("epochs and steps", _with("base.steps", 100), "base", "two units"),
    ("warmup in two units", _with("base.schedule", {"name": "cosine", "warmup_steps": 5, "warmup_epochs": 1}),
     "base.schedule.warmup_epochs", "two units"),
    ("no duration", _with("base.epochs", None), "base", "duration"),
    ("placement out of range", _with("base.model", {"name": "mlp", "widths": [8], "norm": "batchnorm", "norm_at": [5]}),
     "base.model.norm_at", "out of range"),
    ("unknown eval split", _with("base.record.eval_splits", ["train", "holdout"]), "base.record.eval_splits", "holdout"),
    ("grid value invalid", {**tiny_study(), "grid": {"optimizer.lr": [0.1, -1.0]}}, "axis 'optimizer.lr'", "variant 'optimizer.lr=-1'"),
    # a typo in a grid or zip key is named as the study writes it (issue 21)
    ("grid key typo", {**tiny_study(), "grid": {"model.widht": [[8], [16]]}}, "axis 'model.widht'",
     "model 'mlp' has no parameter 'widht'. Did you mean 'widths'?"),
    ("zip key typo", {**tiny_study(), "zip": {"model.widht": [[8], [16]], "optimizer.lr": [0.1, 0.2]}},
     "axis 'model.widht'", "Did you mean 'widths'?"),
    ("grid key from the top", {**tiny_study(), "grid": {"base.model.widths": [[8], [16]]}}, "grid",
     "axis 'base.model.widths': axes are paths in the base run, without 'base.': write 'model.widths'"),
    ("base key at the top", {**tiny_study(), "epochs": 3}, "epochs",
     "unknown key: 'epochs' is a setting of the base run: put it under base:"),
    ("batch size at the top", {**tiny_study(), "batch_size": 3}, "batch_size", "put it under base:"),
    ("bad report metric", {**tiny_study(), "report": {"metrics": ["accuracy"]}}, "report.metrics", "split.name"),
]


@pytest.mark.parametrize("case, study, field, text", CASES, ids=[c[0] for c in CASES])
def test_bad_spec(case, study, field, text, write_study, tmp_path, capsys):
    err, path = _run(write_study, study, tmp_path, capsys)
    assert f"{path}: {field}" in err, err
    assert text in err, err


def test_unreadable_yaml(write_study, tmp_path, capsys):
    err, path = _run(write_study, "name: x\nbase: [unclosed\n", tmp_path, capsys)
    assert path in err and "not valid YAML" in err


def test_an_over_indented_line_is_named_by_line_and_column(write_study, tmp_path, capsys):
    text = "name: x\nbase:\n  data: digits\n  model: mlp\n   optimizer: sgd\n"
    err, path = _run(write_study, text, tmp_path, capsys)
    assert err == (f"error: {path}: line 5, column 13: not valid YAML: mapping values are not allowed here; is this "
                   "line indented more than the key above it, or is a ': ' inside a value that needs quotes?\n"), err
    assert "<unicode string>" not in err


def test_a_tab_is_named_by_line_and_column(write_study, tmp_path, capsys):
    err, path = _run(write_study, "name: x\nbase:\n  data: digits\n\tmodel: mlp\n", tmp_path, capsys)
    assert err.startswith(f"error: {path}: line 4, column 1: not valid YAML: found character '\\t'"), err
    assert len(err.splitlines()) == 1


def test_yaml_that_is_not_a_mapping(write_study, tmp_path, capsys):
    err, path = _run(write_study, "- just\n- a list\n", tmp_path, capsys)
    assert path in err and "mapping" in err


def test_binary_file(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x81")
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and not (tmp_path / "r").exists()


def test_missing_spec_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_bad_override(write_study, tmp_path, capsys):
    err, _ = _run(write_study, tiny_study(), tmp_path, capsys, "--set", "optimizer.lr")
    assert "PATH=VALUE" in err
    err, path = _run(write_study, tiny_study(), tmp_path, capsys, "--set", "optimizer.lr=-3")
    assert f"{path}: base.optimizer.lr" in err


def test_validate_command_writes_nothing(write_study, tmp_path, capsys, monkeypatch):
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.01]}))
    monkeypatch.chdir(tmp_path)  # where the default results/tiny of a run would go
    before = sorted(tmp_path.rglob("*"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 runs = 2 variants × 2 replicates" in out
    assert sorted(tmp_path.rglob("*")) == before and not Path("results").exists()


def test_status_of_a_missing_directory(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "not an ablab results directory" in capsys.readouterr().err


def test_list_unknown_kind(capsys):
    assert main(["list", "modle"]) == 2
    assert "Did you mean 'model'" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--threads", "0"), ("--max-retries", "-1")])
def test_bad_executor_flags(flag, value, write_study, tmp_path, capsys):
    err, _ = _run(write_study, tiny_study(), tmp_path, capsys, flag, value)
    assert flag in err
