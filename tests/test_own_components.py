"""A researcher's own components: ablab.register_*, a study's ``imports``, ``ablab.components`` plug-ins."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import yaml

import ablab
from ablab.cli import main
from ablab.errors import AblabError
from ablab.plugins import load_components
from ablab.registry import ALL_REGISTRIES, MODELS, RegistrationError
from ablab.spec import RunSpec, expand, load_study
from conftest import TINY_BASE

load_components()

MODEL_SOURCE = '''
from torch import nn

import ablab


@ablab.register_model("{name}")
def build(in_shape, out_dim, width: int = 7):
    """A test model of our own."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], width), nn.ReLU(),
                         nn.Linear(width, out_dim))
'''


def _package(root: Path, package: str, model: str) -> Path:
    """``root/package/models.py`` registering model ``model``."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "models.py").write_text(MODEL_SOURCE.format(name=model))
    return root / package / "models.py"


def _study(root: Path, imports, model: str = "own_net", **extra) -> Path:
    base = {**copy.deepcopy(TINY_BASE), "model": {"name": model}, "epochs": 1}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "own", "imports": imports, "base": base, **extra}))
    return path


def test_every_registry_has_a_public_register_function():
    for kind, registry in ALL_REGISTRIES.items():
        assert getattr(ablab, f"register_{kind}").__self__ is registry


def test_a_name_clash_with_a_built_in_is_one_clear_error(own_code_sandbox):
    builtin = MODELS.get("mlp")
    with pytest.raises(RegistrationError) as err:
        ablab.register_model("mlp")(lambda in_shape, out_dim: None)
    msg = str(err.value)
    assert isinstance(err.value, AblabError)
    assert "model 'mlp' is registered twice" in msg and "ablab.models.mlp.mlp" in msg and "choose another name" in msg
    assert MODELS.get("mlp") is builtin


def test_study_imports_register_the_module_and_the_run_names_its_source(own_code_sandbox):
    root = own_code_sandbox
    _package(root, "own_pkg_a", "own_net")
    study = load_study(_study(root, ["own_pkg_a.models"]))
    assert study.imports == ["own_pkg_a.models"] and "own_net" in MODELS
    spec = expand(study)[0].spec
    assert spec.imports == ["own_pkg_a.models"] and set(spec.code) == {"own_pkg_a"}
    assert spec.model == {"name": "own_net", "width": 7}  # validated against the registered signature


def test_run_ids_follow_the_imported_source(own_code_sandbox):
    root = own_code_sandbox
    source = _package(root, "own_pkg_b", "own_net")
    path = _study(root, ["own_pkg_b.models"], grid={"optimizer.lr": [0.1, 0.2]})
    first = [v.id for v in expand(load_study(path))]
    assert [v.id for v in expand(load_study(path))] == first  # unchanged source: the same runs (resume)
    source.write_text(source.read_text() + "\n# a comment is an edit too\n")
    edited = [v.id for v in expand(load_study(path))]
    assert len(set(edited)) == 2 and not set(edited) & set(first)
    (root / "own_pkg_b" / "helpers.py").write_text("SCALE = 2\n")  # a new file of the package counts too
    assert not set(v.id for v in expand(load_study(path))) & set(edited)


def test_a_run_of_built_in_components_keeps_the_id_it_had_before_imports_existed():
    spec = RunSpec.model_validate(TINY_BASE)
    # measured on main before this feature (2399b7e): 0ac8b3b07eb75ace under protocol 2; the same spec's id under
    # protocol 3 (issue 22's change of numbers), which only a PROTOCOL_VERSION bump may move
    assert spec.id == "1a31dc7ecc1e362f"
    assert '"code"' not in spec.canonical_json() and '"imports"' not in spec.canonical_json()


def test_a_worker_parses_the_stored_spec_by_importing_first(own_code_sandbox):
    import sys

    from ablab.spec import parse_unit

    root = own_code_sandbox
    _package(root, "own_pkg_c", "own_net_c")
    spec = expand(load_study(_study(root, ["own_pkg_c.models"], model="own_net_c")))[0].spec
    text = spec.canonical_json()
    for name in [m for m in sys.modules if m.startswith("own_pkg_c")]:
        del sys.modules[name]  # as in a fresh worker process
    del MODELS._entries["own_net_c"]
    again = parse_unit(text)
    assert again.id == spec.id and "own_net_c" in MODELS


@pytest.mark.parametrize("imports, expected", [
    (["no_such_module_xyz"], "imports.0: cannot import 'no_such_module_xyz'"),
    (["own_pkg_ok", "broken_mod"], "imports.1: importing 'broken_mod' failed: RuntimeError: boom"),
    (["mymodels:Net"], "imports.0: 'mymodels:Net' is not a module name"),
    (["os; rm -rf /"], "is not a module name"),
    ("own_pkg_ok", "'imports' is a list of module names"),
])
def test_a_bad_import_is_one_spec_error_exit_2(own_code_sandbox, capsys, imports, expected):
    root = own_code_sandbox
    (root / "own_pkg_ok").mkdir()
    (root / "own_pkg_ok" / "__init__.py").write_text("")
    (root / "broken_mod.py").write_text("raise RuntimeError('boom')\n")
    assert main(["validate", str(_study(root, imports, model="mlp"))]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_import_path_as_a_component_name_points_to_imports(capsys, tmp_path):
    assert main(["validate", str(_study(tmp_path, [], model="mymodels:Net"))]) == 2
    err = capsys.readouterr().err
    assert "never by an import path" in err and "@ablab.register_model('net')" in err
    assert "imports: [mymodels]" in err and "Did you mean" not in err


def test_imports_are_the_study_s_not_a_run_setting(own_code_sandbox, capsys):
    root = own_code_sandbox
    path = _study(root, [], model="mlp")
    raw = yaml.safe_load(path.read_text())
    raw["base"]["imports"] = ["json"]
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 2
    assert "base.imports: 'imports' is not a run setting" in capsys.readouterr().err


def _plugin(root: Path, module_source: str) -> None:
    """A fake installed distribution: a ``*.dist-info`` with an ``ablab.components`` entry point."""
    info = root / "fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ablab.components]\nfakeplug = fakeplug_mod\n")
    (root / "fakeplug_mod.py").write_text(module_source)


def test_an_installed_plug_in_registers_once_and_its_source_is_in_the_run(own_code_sandbox):
    import sys

    root = own_code_sandbox
    _plugin(root, MODEL_SOURCE.format(name="plug_net"))
    sys.path.insert(0, str(root))
    assert "plug_net" not in MODELS
    load_components()
    load_components()  # once per process: a second build does not register it twice
    assert "plug_net" in MODELS
    spec = RunSpec.model_validate({**TINY_BASE, "model": "plug_net"})
    assert set(spec.code) == {"fakeplug_mod"}
    assert RunSpec.model_validate(TINY_BASE).code == {}  # a run that does not use the plug-in keeps its id


def test_a_broken_plug_in_is_one_error_naming_it(own_code_sandbox):
    import sys

    _plugin(own_code_sandbox, "raise ImportError('needs scipy>=99')\n")
    sys.path.insert(0, str(own_code_sandbox))
    with pytest.raises(AblabError, match=r"plug-in 'fakeplug = fakeplug_mod' \(entry point group ablab.components "
                                         r"of fakeplug\) failed to load: ImportError: needs scipy>=99"):
        load_components()


def test_list_params_shows_each_parameter_with_its_default(capsys):
    assert main(["list", "optimizer", "--params"]) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("  sgd "))
    assert out[start + 1:start + 6] == [
        "      lr: PositiveFloat  (required)",
        "      momentum: NonNegativeFloat = 0.0",
        "      nesterov: bool = False",
        "      dampening: NonNegativeFloat = 0.0",
        "      weight_decay: NonNegativeFloat = 0.0",
    ]
    # the listed defaults are the ones a spec gets filled in
    filled = ablab.registry.OPTIMIZERS.validate({"name": "sgd", "lr": 0.1})
    assert all(f"{k}: " in "\n".join(out[start + 1:start + 6]) and f"= {v!r}" in "\n".join(out) for k, v in filled.items()
               if k not in ("name", "lr"))


def test_list_params_shows_an_own_component(own_code_sandbox, capsys):
    _package(own_code_sandbox, "own_pkg_d", "own_net_d")
    load_study(_study(own_code_sandbox, ["own_pkg_d.models"], model="own_net_d"))
    assert main(["list", "model", "--params"]) == 0
    out = capsys.readouterr().out
    assert "  own_net_d        A test model of our own.  [own_pkg_d.models]\n      width: int = 7\n" in out
    assert "  linear           Linear (logistic / least-squares) model on the flattened input.\n      (no parameters)\n" in out


def test_list_spec_imports_the_study_s_modules_first(own_code_sandbox, capsys):
    _package(own_code_sandbox, "own_pkg_l", "own_net_l")
    spec = _study(own_code_sandbox, ["own_pkg_l.models"], model="own_net_l")
    assert main(["list", "model", "--params"]) == 0
    assert "own_net_l" not in capsys.readouterr().out  # nothing imported it yet
    assert main(["list", "model", "--params", "--spec", str(spec)]) == 0
    assert "  own_net_l        A test model of our own.  [own_pkg_l.models]\n      width: int = 7\n" in capsys.readouterr().out
    assert main(["list", "--spec", str(own_code_sandbox / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_a_spawned_worker_finds_the_study_s_module(own_code_sandbox):
    """The local pool's worker start-up adds the spec's folder: a spawned process (no fork) trains the run."""
    import multiprocessing as mp
    import sys
    from concurrent.futures import ProcessPoolExecutor

    from ablab.execute.local import _init_worker, _run_in_worker
    from ablab.plugins import search_path

    root = own_code_sandbox
    _package(root, "own_pkg_e", "own_net_e")
    spec = expand(load_study(_study(root, ["own_pkg_e.models"], model="own_net_e")))[0].spec
    folders = search_path()
    assert str(root.resolve()) in folders
    sys.path[:] = [p for p in sys.path if p != str(root.resolve())]  # the child must get it from the initializer
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(None, 1, folders)) as pool:
        result = pool.submit(_run_in_worker, spec.canonical_json(), spec.id, str(root / "staging")).result(timeout=300)
    assert result.status == "done", result.error


def test_the_report_imports_the_stored_study_s_modules_before_reading_it(own_code_sandbox, tmp_path_factory):
    """A fresh process started elsewhere: reading the stored study back imports its ``imports`` (from the spec's folder)."""
    import subprocess
    import sys

    root = own_code_sandbox
    _package(root, "own_pkg_r", "own_net_r")
    out = root / "results"
    assert main(["run", str(_study(root, ["own_pkg_r.models"], model="own_net_r")), "--out", str(out)]) == 0
    code = ("import sys\nfrom ablab.report import write_report\nfrom ablab.store import Store\n"
            f"store = Store.open({str(out)!r})\nwrite_report(store)\n"
            "print('own_pkg_r.models' in sys.modules, 'own_net_r' in __import__('ablab').MODELS)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path_factory.mktemp("elsewhere"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
