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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def _nested(depth: int) -> str:
    return yaml_plus("report:\n  selection: " + "[" * depth + "]" * depth + "\n")


GOOD_CSV = csv_study()
CASES = [
    # ---- the spec file
    Case("spec", "spec file missing", command("run", "DIR/nope.yaml", "--out", "DIR/results")),
    Case("spec", "spec file empty", run_spec("")),
    Case("spec", "binary file", run_spec(b"\xff\xfe\x00garbage\x81")),
    Case("spec", "not valid YAML", run_spec("name: x\nbase: [unclosed\n")),
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
    Case("spec", "0 replicates", run_spec(tiny_study(seeds={"replicates": 0}))),
    Case("spec", "grid axis with no values", run_spec(tiny_study(grid={"optimizer.lr": []}))),
    Case("spec", "grid axis not a list", run_spec(tiny_study(grid={"optimizer.lr": 0.1}))),
    Case("spec", "grid value invalid", run_spec(tiny_study(grid={"optimizer.lr": [0.1, -1.0]}))),
    Case("spec", "grid over an unknown setting", run_spec(tiny_study(grid={"optimizer.lrr": [0.1, 0.2]}))),
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
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_case(case: Case, root: Path, finished: Path) -> tuple[int, str, list[str]]:
    """Exit code, stderr and the argv of one case, run in this process; asserts nothing was written."""
    argv = case.make(root, finished)
    before = _tree(root)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
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
        rows.append((case, " ".join(_relative(a, root) for a in argv), _relative(err.strip()[len("error: "):], root)))
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
