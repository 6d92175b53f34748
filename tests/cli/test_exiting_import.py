"""A module in ``imports:`` that calls ``sys.exit()`` while imported is bad input naming it, never a silent exit 0."""

import sys

import pytest
import yaml

from ablab import plugins
from ablab.cli import main
from conftest import tiny_study


@pytest.mark.parametrize("code", ["0", "3", "'bye'"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_import_that_exits_is_exit_2_naming_the_module(command, code, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the spec's folder goes on sys.path: taken off after
    monkeypatch.setattr(plugins, "_SEARCH_PATH", list(plugins._SEARCH_PATH))
    name = f"exits_{command}_{abs(hash(code))}"
    (tmp_path / f"{name}.py").write_text(f"import sys\nsys.exit({code})\n")
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({**tiny_study(), "imports": [name]}))
    argv = [command, str(spec)] + (["--out", str(tmp_path / "out")] if command == "run" else ["--no-timing"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "imports.0" in err and f"importing '{name}' exited" in err
    assert not (tmp_path / "out").exists()
