"""docs/errors.md is generated here: every kind of bad input, run through the CLI in this process,
gives exit 2 (bad input) or 74 (I/O failure), one line without a traceback, and writes nothing.

The table in docs/errors.md must equal the one these cases produce now; after a deliberate change
of a message, regenerate it: ``ABLAB_REGENERATE_DOCS=1 pytest tests/docs/test_errors_doc.py``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import yaml

from ablab.cli import main
from ablab.report.markdown import escape_markdown
from conftest import tiny_study

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
BOMB = "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


@dataclass
class Case:
    kind: str  # spec | dataset | cli | store
    what: str
    make: Callable[[Path, Path], list[str]]  # (case folder, a finished study's folder) -> argv
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)  # environment variables the command runs under


def _spec(root: Path, study: dict | str | bytes, name: str = "study.yaml") -> str:
    path = root / name
    if isinstance(study, bytes):
        path.write_bytes(study)
    else:
        path.write_text(study if isinstance(study, str) else yaml.safe_dump(study))
    return str(path)


def _set(path: str, value, study: dict | None = None) -> dict:
    """``tiny_study()`` with the value at a dotted path replaced (None: removed)."""
    study = copy.deepcopy(study or tiny_study())
    *parents, last = path.split(".")
    node = study
    for p in parents:
        node = node[p]
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return study


def run_spec(study, *flags: str) -> Callable[[Path, Path], list[str]]:
    """``ablab run SPEC --out DIR/results FLAGS``; ``study`` a dict, YAML text, bytes or a callable of the folder."""
    def make(root: Path, _: Path) -> list[str]:
        content = study(root) if callable(study) else study
        return ["run", _spec(root, content), "--out", str(root / "results"), *flags]
    return make


def yaml_plus(extra: str) -> str:
    return yaml.safe_dump(tiny_study()) + extra


def _table(root: Path, values: dict | None = None) -> Path:
    """A 60-row CSV table: numeric, categorical and text columns (``values`` replaces some cells)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"height": rng.normal(170, 10, 60).round(1), "colour": rng.choice(["red", "blue"], 60),
                       "level": rng.choice(["high", "low"], 60), "weight": rng.normal(70, 5, 60).round(2)})
    for (row, col), v in (values or {}).items():
        df.loc[row, col] = v
    df.to_csv(root / "table.csv", index=False)
    return root / "table.csv"


def csv_study(cells: dict | None = None, **params) -> Callable[[Path], dict]:
    def study(root: Path) -> dict:
        data = {"name": "csv", "path": str(_table(root, cells)), "target": "level", "task": "classification", **params}
        return _set("base.data", data)
    return study


def store_copy(*argv: str, damage: Callable[[Path], None] | None = None) -> Callable[[Path, Path], list[str]]:
    """A command on a copy of a finished study's folder (``DIR/results``), damaged first if asked."""
    def make(root: Path, finished: Path) -> list[str]:
        shutil.copytree(finished, root / "results")
        if damage:
            damage(root / "results")
        return [a.replace("RESULTS", str(root / "results")) for a in argv]
    return make


def into_store(study: dict, damage: Callable[[Path], None] | None = None) -> Callable[[Path, Path], list[str]]:
    """``ablab run`` of ``study`` into a copy of a finished study's folder (damaged first if asked)."""
    def make(root: Path, finished: Path) -> list[str]:
        store_copy(damage=damage)(root, finished)
        return ["run", _spec(root, study), "--out", str(root / "results")]
    return make


def post_hoc(**fields) -> Callable[[Path, Path], list[str]]:
    """``ablab run`` of a post-hoc ensemble study (``fields`` added) over a copy of a finished study."""
    def make(root: Path, finished: Path) -> list[str]:
        shutil.copytree(finished, root / "source")
        study = {"name": "ens", "source": {"study": str(root / "source")},
                 "base": {"evaluators": ["ensemble"], "eval_splits": ["test"], "device": "cpu"}, **fields}
        return ["run", _spec(root, study), "--out", str(root / "results")]
    return make


def command(*argv: str, setup: Callable[[Path], None] | None = None) -> Callable[[Path, Path], list[str]]:
    def make(root: Path, _: Path) -> list[str]:
        if setup:
            setup(root)
        return [a.replace("DIR", str(root)) for a in argv]
    return make


def _truncate(results: Path) -> None:
    db = results / "ablab.db"
    db.write_bytes(db.read_bytes()[: 2 * 4096])


def _garbage(results: Path) -> None:
    (results / "ablab.db").write_bytes(b"definitely not sqlite " * 500)


def _sql(*statements: str) -> Callable[[Path], None]:
    """A damage: SQL statements run on the results' ``ablab.db``."""
    def damage(results: Path) -> None:
        import sqlite3

        conn = sqlite3.connect(results / "ablab.db")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()
    return damage


def _drop(table: str, *then: str) -> Callable[[Path], None]:
    return _sql(f"DROP TABLE {table}", *then)


def _foreign_db(root: Path) -> None:
    """Someone else's SQLite database as ``DIR/ablab.db``."""
    _sql("CREATE TABLE notes(text TEXT)", "INSERT INTO notes VALUES ('mine')")(root)


def _looping_link(root: Path) -> None:
    _spec(root, tiny_study())
    (root / "loop").symlink_to(root / "loop")


def _source_study(root: Path) -> Path:
    """A finished one-run study in ``DIR/src`` that saves its checkpoint at epoch 1."""
    study = tiny_study(name="src", seeds={"replicates": 1})
    study["base"]["record"]["checkpoints"] = {"epochs": [1]}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", _spec(root, study, "src.yaml"), "--out", str(root / "src"), "--threads", "1"]) == 0
    return root / "src"


def _checkpoint_file(results: Path) -> Path:
    return next((results / "runs").glob("*/checkpoint_*.pt"))


def _remove_checkpoint(results: Path) -> None:
    _checkpoint_file(results).unlink()


def _flip_checkpoint(results: Path) -> None:
    path = _checkpoint_file(results)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def from_source(damage: Callable[[Path], None] | None, init_from: dict) -> Callable[[Path, Path], list[str]]:
    """``ablab validate`` of a study continuing a stored source study (``DIR/src``), damaged first if asked."""
    def make(root: Path, _: Path) -> list[str]:
        src = _source_study(root)
        if damage:
            damage(src)
        study = _set("base.init_from", {"study": str(src), **init_from}, tiny_study(seeds={"replicates": 1}))
        return ["validate", _spec(root, study), "--no-timing"]
    return make


def _exiting_import(root: Path) -> dict:
    """A study importing a module that calls ``sys.exit(0)`` (compiled first, so the import writes no file)."""
    import py_compile

    (root / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    py_compile.compile(str(root / "exits_on_import.py"), doraise=True)
    return {**tiny_study(), "imports": ["exits_on_import"]}


def _shape_bug(root: Path) -> dict:
    """A study of an own model (``imports:``) whose second layer expects one input too many when ``bug`` is set
    (compiled first, so the import writes no file; built with its defaults, as other tests do, it works)."""
    import py_compile

    (root / "shape_bug_doc.py").write_text(
        "from torch import nn\nimport ablab\n\n\n@ablab.register_model('shape_bug_doc')\n"
        "def build(in_shape, out_dim, bug: bool = False):\n    \"\"\"A model for docs/errors.md.\"\"\"\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Linear(64 + bug, out_dim))\n")
    py_compile.compile(str(root / "shape_bug_doc.py"), doraise=True)
    study = tiny_study(imports=["shape_bug_doc"], grid={"model.bug": [False, True]})
    study["base"]["model"] = {"name": "shape_bug_doc"}
    return study


def _nested(depth: int) -> str:
    return yaml_plus("report:\n  selection: " + "[" * depth + "]" * depth + "\n")


GOOD_CSV = csv_study()
CASES = [
    # ---- the spec file
    Case("spec", "spec file missing", command("run", "DIR/nope.yaml", "--out", "DIR/results")),
    Case("spec", "spec file empty", run_spec("")),
    Case("spec", "binary file", run_spec(b"\xff\xfe\x00garbage\x81")),
    Case("spec", "not valid YAML", run_spec("name: x\nbase: [unclosed\n")),
    Case("spec", "over-indented line", run_spec("name: x\nbase:\n  data: digits\n  model: mlp\n   optimizer: sgd\n")),
    Case("spec", "YAML list instead of a mapping", run_spec("- just\n- a list\n")),
    Case("spec", "YAML alias bomb (billion laughs)", run_spec(yaml_plus(BOMB + "grid:\n  optimizer.lr: *a8\n"))),
    Case("spec", "duplicate top-level key", run_spec(yaml_plus("description: x\ndescription: y\n"))),
    Case("spec", "duplicate `grid:`", run_spec(yaml_plus("grid:\n  optimizer.lr: [0.1]\ngrid:\n  optimizer.lr: [0.2]\n"))),
    Case("spec", "duplicate key inside base", run_spec(yaml.safe_dump(tiny_study()).replace("  epochs: 2\n",
                                                                                            "  epochs: 1\n  epochs: 50\n"))),
    Case("spec", "300 nested `[`", run_spec(_nested(300))),
    Case("spec", "`lr: .inf`", run_spec(yaml.safe_dump(tiny_study()).replace("lr: 0.1", "lr: .inf"))),
    Case("spec", "`lr: .nan`", run_spec(yaml.safe_dump(tiny_study()).replace("lr: 0.1", "lr: .nan"))),
    Case("spec", "10 million replicates", run_spec(tiny_study(seeds={"replicates": 10_000_000}))),
    Case("spec", "no base", run_spec(_set("base", None))),
    Case("spec", "unknown top-level key", run_spec({**tiny_study(), "gird": {}})),
    Case("spec", "a base setting at the top level (`epochs:`)", run_spec({**tiny_study(), "epochs": 3})),
    Case("spec", "unknown base key (typo)", run_spec(_set("base.epoch", 3))),
    Case("spec", "unknown record key", run_spec(_set("base.record.every", 3))),
    Case("spec", "unknown component parameter", run_spec(_set("base.model.width", [3]))),
    Case("spec", "unknown model", run_spec(_set("base.model", {"name": "resnet9000"}))),
    Case("spec", "unknown optimizer (close to a known one)", run_spec(_set("base.optimizer.name", "adamm"))),
    Case("spec", "unknown activation", run_spec(_set("base.model.activation", "relux"))),
    Case("spec", "unknown schedule", run_spec(_set("base.schedule", {"name": "cosinus"}))),
    Case("spec", "unknown device", run_spec(_set("base.device", "tpu"))),
    Case("spec", "wrong type (text for an integer)", run_spec(_set("base.batch_size", "many"))),
    Case("spec", "wrong type in a component", run_spec(_set("base.model.dropout", "lots"))),
    Case("spec", "learning rate 0", run_spec(_set("base.optimizer.lr", 0))),
    Case("spec", "negative learning rate", run_spec(_set("base.optimizer.lr", -0.1))),
    Case("spec", "0 epochs", run_spec(_set("base.epochs", 0))),
    Case("spec", "negative batch size", run_spec(_set("base.batch_size", -8))),
    Case("spec", "epochs and steps both given", run_spec(_set("base.steps", 100))),
    Case("spec", "warmup in two units", run_spec(_set("base.schedule", {"name": "cosine", "warmup_steps": 5,
                                                                          "warmup_epochs": 1}))),
    Case("spec", "no duration", run_spec(_set("base.epochs", None))),
    Case("spec", "normalization placement out of range",
         run_spec(_set("base.model", {"name": "mlp", "widths": [8], "norm": "batchnorm", "norm_at": [5]}))),
    Case("spec", "unknown evaluation split", run_spec(_set("base.record.eval_splits", ["train", "holdout"]))),
    Case("spec", "a module in `imports:` that calls `sys.exit(0)`", run_spec(_exiting_import)),
    Case("spec", "0 replicates", run_spec(tiny_study(seeds={"replicates": 0}))),
    Case("spec", "grid axis with no values", run_spec(tiny_study(grid={"optimizer.lr": []}))),
    Case("spec", "grid axis not a list", run_spec(tiny_study(grid={"optimizer.lr": 0.1}))),
    Case("spec", "grid value invalid", run_spec(tiny_study(grid={"optimizer.lr": [0.1, -1.0]}))),
    Case("spec", "grid over an unknown setting", run_spec(tiny_study(grid={"optimizer.lrr": [0.1, 0.2]}))),
    Case("spec", "grid key with a typo in a parameter", run_spec(tiny_study(grid={"model.widht": [[8], [16]]}))),
    Case("spec", "grid key starting with `base.`", run_spec(tiny_study(grid={"base.model.widths": [[8], [16]]}))),
    Case("spec", "a model that fails its forward pass (shape bug, own model)", run_spec(_shape_bug)),
    Case("spec", "report metric without split", run_spec({**tiny_study(), "report": {"metrics": ["accuracy"]}})),
    # ---- datasets
    Case("dataset", "unknown dataset", run_spec(_set("base.data", "cifar11"))),
    Case("dataset", "CSV file missing", run_spec(lambda root: _set("base.data", {
        "name": "csv", "path": str(root / "missing.csv"), "target": "level", "task": "classification"}))),
    Case("dataset", "CSV target column missing", run_spec(csv_study(target="lvl"))),
    Case("dataset", "CSV dropped column missing", run_spec(csv_study(drop=["nope"]))),
    Case("dataset", "CSV text target for regression", run_spec(csv_study(task="regression"))),
    Case("dataset", "CSV target also a feature", run_spec(csv_study(features=["level", "height"]))),
    Case("dataset", "CSV with `inf`", run_spec(csv_study(cells={(3, "height"): np.inf}))),
    Case("dataset", "CSV with an empty cell", run_spec(csv_study(cells={(3, "height"): np.nan}))),
    Case("dataset", "`synthetic` with `n_features: 1e9`",
         run_spec(_set("base.data", {"name": "synthetic", "n_features": 1e9}))),
    Case("dataset", "`synthetic` of more than 10^8 values",
         run_spec(_set("base.data", {"name": "synthetic", "n_samples": 1_000_000, "n_features": 1000}))),
    Case("dataset", "CSV splits leave no training rows", run_spec(csv_study(test_fraction=0.5, val_fraction=0.49))),
    # ---- the command line
    Case("cli", "`--set` without `=`", run_spec(tiny_study(), "--set", "optimizer.lr")),
    Case("cli", "`--set` an invalid value", run_spec(tiny_study(), "--set", "optimizer.lr=-3")),
    Case("cli", "`--set` a non-finite number", run_spec(tiny_study(), "--set", "optimizer.lr=.inf")),
    Case("cli", "`--set` an unknown setting", run_spec(tiny_study(), "--set", "optimizer.lrr=0.1")),
    Case("cli", "`--workers 0`", run_spec(tiny_study(), "--workers", "0")),
    Case("cli", "`--threads 0`", run_spec(tiny_study(), "--threads", "0")),
    Case("cli", "`--max-retries -1`", run_spec(tiny_study(), "--max-retries", "-1")),
    Case("cli", "`--address` without `--executor ray`", run_spec(tiny_study(), "--address", "auto")),
    Case("cli", "`--address` where no Ray head answers (port 1 of this machine)",
         run_spec(tiny_study(), "--executor", "ray", "--address", "127.0.0.1:1")),
    Case("cli", "`--max-artifact-gb 0`", run_spec(tiny_study(), "--max-artifact-gb", "0")),
    Case("cli", "more runs than `--max-runs`", run_spec(tiny_study(), "--max-runs", "1")),
    Case("spec", "two variants with one label", run_spec(tiny_study(zip={"label": ["a", "a"],
                                                                         "optimizer.lr": [0.1, 0.05]}))),
    Case("spec", "10 million grid combinations made by YAML aliases",
         run_spec(yaml_plus("grid:\n  a0: &ten [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
                            + "".join(f"  a{i}: *ten\n" for i in range(1, 7))))),
    Case("spec", "a checkpoint epoch after the end of training",
         run_spec(_set("base.record.checkpoints", {"epochs": [5]}))),
    Case("spec", "a prediction epoch after the end of training",
         run_spec(_set("base.record.evaluators", ["standard", {"name": "predictions", "epochs": [9]}]))),
    Case("cli", "`--max-artifact-gb nan`", run_spec(tiny_study(), "--max-artifact-gb", "nan")),
    Case("cli", "`--max-runs 0`", run_spec(tiny_study(), "--max-runs", "0")),
    Case("cli", "`validate` of a missing file", command("validate", "DIR/nope.yaml")),
    Case("cli", "`list` of an unknown kind", command("list", "modle")),
    # ---- results directories and stores
    Case("store", "`status` of a missing directory", command("status", "DIR/nothing")),
    Case("store", "`status` of a directory without a store", command("status", "DIR", setup=lambda r: None)),
    Case("store", "`report` of a missing directory", command("report", "DIR/nothing")),
    Case("store", "`status` of an empty `ablab.db`", command("status", "DIR",
                                                              setup=lambda r: (r / "ablab.db").write_bytes(b""))),
    Case("store", "`status` where `ablab.db` is a directory", command("status", "DIR",
                                                                       setup=lambda r: (r / "ablab.db").mkdir())),
    Case("store", "`run --out` naming a file", command("run", "DIR/study.yaml", "--out", "DIR/study.yaml",
                                                       setup=lambda r: _spec(r, tiny_study()))),
    Case("store", "`run --out` where `ablab.db` is a directory",
         command("run", "DIR/study.yaml", "--out", "DIR", setup=lambda r: (_spec(r, tiny_study()),
                                                                           (r / "ablab.db").mkdir()))),
    Case("store", "`status --study` of a study never stored", store_copy("status", "RESULTS", "--study", "nope")),
    Case("store", "`run` of another study into a results directory",
         into_store(tiny_study(name="other"))),
    Case("store", "`status` of a truncated `ablab.db`", store_copy("status", "RESULTS", damage=_truncate), code=74),
    Case("store", "`status` of a garbage `ablab.db`", store_copy("status", "RESULTS", damage=_garbage), code=74),
    Case("store", "`report` of a garbage `ablab.db`", store_copy("report", "RESULTS", damage=_garbage), code=74),
    Case("store", "`run` into a garbage `ablab.db`", into_store(tiny_study(seeds={"replicates": 1}), damage=_garbage),
         code=74),
    Case("store", "`status` of a foreign SQLite `ablab.db`", command("status", "DIR", setup=_foreign_db)),
    Case("store", "`run --out` a folder holding a foreign SQLite `ablab.db`",
         command("run", "DIR/study.yaml", "--out", "DIR", setup=lambda r: (_spec(r, tiny_study()), _foreign_db(r)))),
    Case("store", "`status` of a store without `study_runs`", store_copy("status", "RESULTS", damage=_drop("study_runs")),
         code=74),
    Case("store", "`report` with the `metrics` table dropped", store_copy("report", "RESULTS", damage=_drop("metrics")),
         code=74),
    Case("store", "`run` into a store whose `artifacts` table was dropped",
         into_store(tiny_study(seeds={"replicates": 1}), damage=_drop("artifacts")), code=74),
    Case("store", "`run` into a store with a foreign `metrics` table",
         into_store(tiny_study(seeds={"replicates": 1}), damage=_drop("metrics", "CREATE TABLE metrics(a, b)")), code=74),
    Case("store", "`status` of a store with a garbage `spec_json`",
         store_copy("status", "RESULTS", damage=_sql("UPDATE study SET spec_json = 'garbage{'")), code=74),
    Case("store", "`report` where `report/` is a file",
         store_copy("report", "RESULTS", damage=lambda res: (res / "report").write_text("mine"))),
    Case("store", "`export --tensorboard` naming a file",
         store_copy("export", "RESULTS", "--tensorboard", "RESULTS/ablab.db")),
    Case("store", "`run --out` a symbolic link that loops",
         command("run", "DIR/study.yaml", "--out", "DIR/loop", setup=_looping_link)),
    Case("store", "`run --out` a folder whose `.staging` is a file",
         into_store(tiny_study(seeds={"replicates": 1}), damage=lambda res: (res / ".staging").write_text(""))),
    Case("store", "`init_from` source checkpoint missing", from_source(_remove_checkpoint, {"run": {}, "epoch": 1})),
    Case("store", "`init_from` source checkpoint not its sha256",
         from_source(_flip_checkpoint, {"run": {}, "epoch": 1})),
    Case("store", "`init_from.select` on a metric no run recorded",
         from_source(None, {"select": {"metric": "test.acuracy", "k": 1}, "epoch": 1})),
    Case("store", "a 300-character study name",
         command("run", "DIR/study.yaml", "--out", "DIR/results/" + "s" * 300,
                 setup=lambda r: _spec(r, tiny_study(name="s" * 300)))),
    # ---- later additions, at the end so that the rows above keep their numbers
    Case("spec", "a mix before a crop", run_spec(_set("base.augment", ["mixup", {"name": "random_crop", "padding": 1}]))),
    Case("spec", "colour jitter after `normalize`",
         run_spec(_set("base.augment", ["normalize", {"name": "color_jitter", "brightness": 0.2}]))),
    Case("spec", "`insist` on an unknown rule", run_spec(tiny_study(insist=["everything"]))),
    Case("spec", "`members` axis in a training study", run_spec(tiny_study(grid={"members": [{"groups": 2}]}))),
    Case("spec", "`members` axis value that is no unit kind",
         post_hoc(grid={"members": [{"groups": 1}, "triples"]})),
    Case("spec", "`members` axis beside a top-level `members`",
         post_hoc(members="pairs", grid={"members": ["single"]})),
    Case("spec", "execute.pack neither auto, off nor a number of runs", run_spec(tiny_study(execute={"pack": 0}))),
    Case("spec", "ghost BatchNorm size B′ not dividing the batch",
         run_spec(_set("base.model.norm", {"name": "ghost_batchnorm", "ghost_size": 3}))),
    Case("spec", "norm channel groups not dividing the channels",
         run_spec(_set("base.model.norm", {"name": "group_norm", "groups": 3}))),
    Case("spec", "example weight α outside [0, 1]",
         run_spec(_set("base.record.evaluators", ["standard", {"name": "example_weighing", "alpha": 1.5}]))),
    Case("spec", "example weighing of a model without norm layers",
         run_spec(_set("base.record.evaluators", ["standard", "example_weighing"]))),
    # ---- attacks and robust evaluation (seed 002 ch. 3)
    Case("spec", "an attack with ε < 0", run_spec(_set("base.record.evaluators", [
        {"name": "robust", "attack": {"name": "pgd", "eps": -0.03}}]))),
    Case("spec", "an attack with steps < 0", run_spec(_set("base.record.evaluators", [
        {"name": "robust", "attack": {"name": "pgd", "steps": -1}}]))),
    Case("spec", "robust evaluation of a regression task", run_spec(_set("base.record.evaluators", ["robust"], _set(
        "base.data", "diabetes", _set("base.loss", "mse"))))),
    Case("dataset", "robust evaluation of data outside the attack's pixel range (standardized features)",
         run_spec(_set("base.record.evaluators", ["robust"], _set("base.data", "wine")))),
    Case("spec", "robust evaluation on a split smaller than its subsample", run_spec(_set(
        "base.record.evaluators", [{"name": "robust", "examples": 1000}]))),
    Case("spec", "lr-multiplier rule matching no parameter", run_spec(_set("base.lr_multipliers", {"norm": 0.1}))),
    Case("spec", "unknown lr-multiplier rule", run_spec(_set("base.lr_multipliers", {"norms": 0.1}))),
    Case("spec", "two lr-multiplier rules selecting one class",
         run_spec(_set("base.lr_multipliers", {"bias": 0.1, "bias_norm": 0.2}))),
    Case("spec", "`non_iid` sampler with more classes than the data has",
         run_spec(_set("base.sampler", {"name": "non_iid", "k": 11}))),
    Case("spec", "`non_iid` sampler whose k does not divide the batch",
         run_spec(_set("base.sampler", {"name": "non_iid", "k": 3}))),
    Case("spec", "output-range probe of a layer that is not a norm layer",
         run_spec(_set("base.record", {"probes": [{"name": "output_range", "layer": "nope"}]},
                       _set("base.model", {"name": "mlp", "widths": [8], "norm": "batchnorm"})))),
    # seed 002 ch. 3: label smoothing (Eq. 3.8) and the adversarial objectives
    Case("spec", "label smoothing `smoothing` above 1 − 1/C",
         run_spec(_set("base.loss", {"name": "cross_entropy", "smoothing": 0.95}))),
    Case("spec", "both label-smoothing conventions given",
         run_spec(_set("base.loss", {"name": "cross_entropy", "smoothing": 0.1, "label_smoothing": 0.1}))),
    Case("spec", "adversarial training with `normalize` before another augment step",
         run_spec(_set("base.augment", ["normalize", {"name": "random_crop", "padding": 1}],
                       _set("base.objective", {"name": "adversarial", "attack": "fgsm"})))),
    Case("spec", "adversarial training of a regression task",
         run_spec(_set("base.objective", "alp", _set("base.data", "diabetes", _set("base.loss", "mse"))))),
    Case("dataset", "adversarial training on data outside the attack's pixel range (standardized features)",
         run_spec(_set("base.objective", "decoupled_alp", _set("base.data", "wine")))),
    # the environment
    Case("cli", "`ABLAB_MALLOC` other than `system` (a typo)", lambda root, _: ["list"], env={"ABLAB_MALLOC": "sytem"}),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-run study (the store the store cases copy and damage)."""
    root = tmp_path_factory.mktemp("finished")
    study = tiny_study(seeds={"replicates": 1})
    study["base"]["epochs"] = 1
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", _spec(root, study), "--out", str(root / "results"), "--threads", "1"]) == 0
    return root / "results"


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> content digest (folders: 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = ("link" if path.is_symlink() else "dir" if path.is_dir()
                    else hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def run_case(case: Case, root: Path, finished: Path) -> tuple[int, str, list[str]]:
    """Exit code, stderr and the argv of one case, run in this process; asserts nothing was written."""
    argv = case.make(root, finished)
    before = _tree(root)
    err = io.StringIO()
    with mock.patch.dict(os.environ, case.env), contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    assert _tree(root) == before, f"{case.what}: files changed"
    return code, err.getvalue(), argv


def _relative(text: str, root: Path) -> str:
    return text.replace(str(root.resolve()), "DIR").replace(str(root), "DIR")


def test_every_bad_input_is_one_line_with_its_exit_code_and_the_table_is_current(finished, tmp_path):
    rows = []
    for i, case in enumerate(CASES):
        root = tmp_path / f"case{i}"
        root.mkdir()
        code, err, argv = run_case(case, root, finished)
        assert code == case.code, (case.what, code, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (case.what, err)
        rows.append((case, " ".join([f"{k}={v}" for k, v in case.env.items()] + [_relative(a, root) for a in argv]), _relative(err.strip()[len("error: "):], root)))
    assert len(CASES) >= 50 and len({c.what for c in CASES}) == len(CASES)
    table = render(rows)
    if os.environ.get("ABLAB_REGENERATE_DOCS") == "1":
        DOC.write_text(table)
    assert DOC.read_text() == table, "docs/errors.md is out of date: ABLAB_REGENERATE_DOCS=1 pytest " + __file__


HEADER = """# Errors: what bad input gets

Generated by `tests/docs/test_errors_doc.py`, which runs every case below through `ablab` and checks
that each gives its exit code, one line on stderr (no traceback) and writes nothing; it fails when
this table is out of date (`ABLAB_REGENERATE_DOCS=1 pytest tests/docs/test_errors_doc.py` rewrites it).

Exit codes: 2 bad input (a spec, dataset, flag or path that is not what the command needs; fix it
and rerun), 74 I/O failure (EX_IOERR: a damaged store, a full disk; nothing stored is lost and the
same command resumes once the cause is fixed). `DIR` stands for the folder each case ran in; spec
files are `DIR/study.yaml` (the tiny study of `tests/conftest.py`, changed as the input column says).

| # | kind | input | command | exit | message |
|---:|---|---|---|---:|---|
"""


def render(rows: list[tuple[Case, str, str]]) -> str:
    lines = [f"| {i} | {case.kind} | {case.what} | {escape_markdown(cmd)} | {case.code} | "
             f"{escape_markdown(msg)} |" for i, (case, cmd, msg) in enumerate(rows, 1)]
    return HEADER + "\n".join(lines) + "\n"
