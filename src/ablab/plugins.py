"""The researcher's own components: modules a study imports, and installed plug-ins.

All three routes register with the same decorators as ablab's own components
(``@ablab.register_model("mynet")``):

1. a study names modules to import: ``imports: [my_package.models]``. The driver imports them
   before it validates the study, every worker before its run. The spec file's folder is put at
   the front of ``sys.path`` (as ``python script.py`` does for the script's folder), in the driver
   and in every worker, so a package next to the spec is found wherever ablab is started from;
   anything else must be importable as usual (installed, or on ``PYTHONPATH``).
2. an installed distribution declares an entry point in group ``ablab.components`` naming a
   module; it is imported once, when the registries are built.
3. a Python program that uses ablab as a library registers before it builds a study.

A run records the source of the code it uses (``RunSpec.code``: top-level package → sha256 of its
``.py`` files), so editing that code changes the run's id, as it should: the numbers may change.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from ablab.errors import AblabError, SpecError
from ablab.registry import ALL_REGISTRIES, Registry

ENTRY_POINT_GROUP = "ablab.components"
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SEARCH_PATH: list[str] = []  # folders this process put on sys.path for imports (handed to workers)
_LOADED_ENTRY_POINTS: set[tuple[str, str]] = set()


def check_module_name(name: Any) -> str:
    """A dotted module name (``my_package.models``); anything else (code, ``mod:attr``, a path) is refused."""
    if not isinstance(name, str) or not _MODULE_NAME.match(name):
        raise ValueError(f"{name!r} is not a module name: 'imports' lists dotted module names "
                         "(my_package.models) whose import registers components")
    return name


def add_search_path(*folders: str | Path) -> None:
    """Put ``folders`` at the front of ``sys.path`` (once each), where imports and workers find them."""
    for folder in reversed([str(Path(f).resolve()) for f in folders]):
        if folder not in _SEARCH_PATH:
            _SEARCH_PATH.insert(0, folder)
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    importlib.invalidate_caches()


def search_path() -> list[str]:
    """The folders this process added (a worker process adds the same before its first run)."""
    return list(_SEARCH_PATH)


def import_modules(names: Iterable[str], field: str = "imports") -> None:
    """Import each named module; a failure is one ``SpecError`` naming the module and the cause."""
    for i, name in enumerate(names):
        try:
            importlib.import_module(check_module_name(name))
        except ValueError as err:
            raise SpecError(str(err), field=f"{field}.{i}") from None
        except ModuleNotFoundError as err:
            where = ", ".join(_SEARCH_PATH) or "the installed packages"
            raise SpecError(f"cannot import '{name}': {err} (searched the spec's folder and sys.path: {where})",
                            field=f"{field}.{i}") from None
        except Exception as err:  # the module's own code failed: say which module and why
            raise SpecError(f"importing '{name}' failed: {type(err).__name__}: {err}", field=f"{field}.{i}") from None
        except SystemExit as err:  # sys.exit() in the module's code: an import only defines and registers
            raise SpecError(f"importing '{name}' exited (sys.exit({err.code!r})): a module in 'imports' defines and "
                            "registers components; it must not exit", field=f"{field}.{i}") from None


def load_entry_points() -> None:
    """Import every installed plug-in module of group ``ablab.components`` (each once per process)."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key in _LOADED_ENTRY_POINTS:
            continue
        _LOADED_ENTRY_POINTS.add(key)
        try:
            ep.load()
        except (Exception, SystemExit) as err:  # SystemExit: the plug-in called sys.exit() while imported
            dist = f" of {ep.dist.name}" if getattr(ep, "dist", None) is not None else ""
            raise AblabError(f"plug-in '{ep.name} = {ep.value}' (entry point group {ENTRY_POINT_GROUP}{dist}) "
                             f"failed to load: {type(err).__name__}: {err}") from None


def load_components() -> dict[str, Registry]:
    """Every registry by kind, installed plug-ins loaded (the built-ins registered when ``ablab`` was imported)."""
    load_entry_points()  # after the built-ins, so a plug-in reusing a built-in name is the error
    return ALL_REGISTRIES


def source_hash(package: str) -> str:
    """sha256 (12 hex digits) of a top-level module's ``.py`` files: every file of a package, or the one file."""
    module = sys.modules.get(package) or importlib.import_module(package)
    folders = [Path(p) for p in getattr(module, "__path__", [])]
    files = [(f.relative_to(d), f) for d in folders for f in sorted(d.rglob("*.py"))]
    if not folders and getattr(module, "__file__", None):
        files = [(Path(module.__file__).name, Path(module.__file__))]
    h = hashlib.sha256()
    for rel, path in files:
        h.update(str(rel).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12] if files else "no-source"


def code_of(spec_data: dict[str, Any], imports: Iterable[str]) -> dict[str, str]:
    """Top-level package → source hash, for each imported module and each package that registered a
    component the run names (a string of the spec equal to its name: at worst a package too many)."""
    strings = set(_strings(spec_data))
    packages = {name.split(".")[0] for name in imports}
    for registry in ALL_REGISTRIES.values():
        for entry in registry.list_entries():
            package = entry.module.split(".")[0]
            if entry.name in strings and package not in ("ablab", ""):
                packages.add(package)
    return {p: source_hash(p) for p in sorted(packages)}


def _strings(data: Any) -> Iterable[str]:
    """Every string value in a nested spec (component names among them)."""
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)
