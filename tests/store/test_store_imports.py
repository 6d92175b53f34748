"""The store and the base modules it stands on never import the training code, not even lazily."""

import ast
from pathlib import Path

import pytest

import ablab

SRC = Path(ablab.__file__).parent
CHECKED = sorted([*(SRC / "store").glob("*.py"), SRC / "artifacts.py", SRC / "files.py"])


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports anywhere: top level, in functions, under
    TYPE_CHECKING; absolute names, plus ``module.name`` for each ``from module import name``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # from ablab import train
    return found


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(), ".".join(path.relative_to(SRC.parent).parts[:-1]))


def test_the_checked_modules_are_found():
    names = {p.name for p in CHECKED}
    assert {"database.py", "reader.py", "layout.py", "lock.py", "errors.py", "artifacts.py", "files.py"} <= names


def test_lazy_relative_and_from_imports_are_seen():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ablab.train.result import RunResult\n"
              "def f():\n    from ..train import loop\n    import ablab.train.posthoc\nfrom ablab import train\n"
              "from . import layout\n")
    got = imported_modules(source, "ablab.store")
    assert {"ablab.train.result", "ablab.train.loop", "ablab.train.posthoc", "ablab.train",
            "ablab.store.layout"} <= got


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_of_the_training_code(path):
    upward = sorted(m for m in imports_of(path) if m == "ablab.train" or m.startswith("ablab.train."))
    assert upward == [], f"{path.relative_to(SRC)} imports {upward}"


@pytest.mark.parametrize("name", ["files.py", "artifacts.py"])
def test_files_and_artifacts_import_nothing_of_ablab_but_errors(name):
    ours = {m for m in imports_of(SRC / name) if m.split(".")[0] == "ablab"}
    assert all(m == "ablab.errors" or m.startswith("ablab.errors.") for m in ours), ours
