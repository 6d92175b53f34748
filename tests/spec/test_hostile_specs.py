"""Hostile or mistaken YAML (issue 11 item 4): each is one clear error, exit 2, nothing written."""

import pytest
import yaml

from ablab.cli import main
from conftest import tiny_study

_BOMB = "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


def _with(base_yaml: str, extra: str) -> str:
    return base_yaml + extra


@pytest.mark.parametrize("extra, message", [
    ("grid:\n  optimizer.lr: *a8\n", "alias bomb"),
    ("grid:\n  optimizer.lr: [0.1]\ngrid:\n  optimizer.lr: [0.2]\n", "duplicate key 'grid'"),
    ("description: x\ndescription: y\n", "duplicate key 'description'"),
    ("report:\n  selection: " + "[" * 300 + "]" * 300 + "\n", "nested more than"),
], ids=["alias-bomb", "duplicate-grid", "duplicate-key", "deep-nesting"])
def test_hostile_yaml_is_one_error_and_writes_nothing(write_study, tmp_path, capsys, extra, message):
    text = yaml.safe_dump(tiny_study()) + (_BOMB if "*a8" in extra else "") + extra
    out = tmp_path / "r"
    assert main(["run", str(write_study(text)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not out.exists()


def test_duplicate_keys_inside_the_base_run_are_refused(write_study, capsys):
    text = yaml.safe_dump(tiny_study()).replace("  epochs: 2\n", "  epochs: 1\n  epochs: 50\n")
    assert "epochs: 50" in text
    assert main(["validate", str(write_study(text))]) == 2
    assert "duplicate key 'epochs'" in capsys.readouterr().err


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_in_the_file_and_on_the_command_line(write_study, capsys, value):
    text = yaml.safe_dump(tiny_study()).replace("lr: 0.1", f"lr: {value}")
    assert main(["validate", str(write_study(text))]) == 2
    assert "not a finite number" in capsys.readouterr().err
    assert main(["validate", str(write_study(tiny_study(), "ok.yaml")), "--set", f"optimizer.lr={value}"]) == 2
    assert "not a finite number" in capsys.readouterr().err


def test_millions_of_replicates_are_refused_at_once(write_study, capsys):
    study = tiny_study(seeds={"replicates": 10_000_000})
    assert main(["validate", str(write_study(study))]) == 2
    assert "too many" in capsys.readouterr().err


def test_a_legitimate_anchor_still_works(write_study, capsys):
    text = yaml.safe_dump(tiny_study()) + "zip:\n  optimizer: [&sgd {name: sgd, lr: 0.1}, {name: adam, lr: 0.001}]\n"
    assert main(["validate", str(write_study(text))]) == 0
