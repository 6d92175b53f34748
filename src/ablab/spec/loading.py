"""Reading a study: YAML, command-line overrides (``--set PATH=VALUE``) and readable spec errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel

from ablab.errors import SpecError, split_located
from ablab.plugins import add_search_path, import_modules
from ablab.spec.models import EvalSpec, RunSpec, Study
from ablab.spec.yaml_safe import load_yaml

def _read_yaml(path: Path):
    """A spec file's YAML, or one ``SpecError`` naming the file (missing, unreadable, not valid YAML)."""
    try:
        return load_yaml(path.read_text())
    except FileNotFoundError:
        raise SpecError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read: {err}", file=str(path)) from None
    except yaml.YAMLError as err:
        raise _yaml_error(err, str(path)) from None


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read and validate a study YAML; ``overrides`` are ``path=value`` strings on ``base``."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError("a study is a YAML mapping with keys name, base, grid, zip, seeds, report", file=str(path))
    raw.setdefault("name", path.stem)
    base_paths: list[str] = []  # what the overrides set in the base run
    for item in overrides or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"an override is PATH=VALUE, got {item!r}", file="--set")
        try:
            parsed = load_yaml(value)
        except yaml.YAMLError as err:
            if "finite" in str(err):
                raise SpecError(f"{value!r} is not a finite number", file="--set", field=key) from None
            parsed = value
        # paths start at the study (seeds.replicates, report.selection, base.seeds.init);
        # any other path is a setting of the base run (optimizer.lr, data.path)
        if key.split(".")[0] in Study.model_fields:
            set_path(raw, key, parsed, where=f"--set {key}")
            if key.startswith("base."):
                base_paths.append(key[len("base."):])
        elif isinstance(raw.get("base"), dict):
            set_path(raw["base"], key, parsed, where=f"--set {key}")
            base_paths.append(key)
        else:
            raise SpecError("the study has no 'base' mapping to override", file=str(path))
    _import_own_modules(raw.get("imports"), path)
    _check_shadowed(raw, base_paths)
    try:
        return Study.model_validate(raw)
    except pydantic.ValidationError as err:
        raise _spec_error(err, str(path)) from None


def _yaml_error(err: yaml.YAMLError, file: str) -> SpecError:
    """PyYAML's error as one line: the line and column (1-based) where it stopped, and what it found there."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or problem is None:
        return SpecError(f"not valid YAML: {' '.join(str(err).split())}", file=file)
    context = getattr(err, "context", None)
    what = f"{problem} ({context})" if context else problem
    if problem == "mapping values are not allowed here":
        what += "; is this line indented more than the key above it, or is a ': ' inside a value that needs quotes?"
    return SpecError(f"not valid YAML: {what}", field=f"line {mark.line + 1}, column {mark.column + 1}", file=file)


def import_spec_modules(path: str | Path) -> list[str]:
    """Import what a study's ``imports:`` names (as ``ablab run`` would, its folder first on ``sys.path``),
    without validating the rest of it; returns the module names."""
    path = Path(path)
    raw = _read_yaml(path)
    imports = raw.get("imports") if isinstance(raw, dict) else None
    _import_own_modules(imports, path)
    return list(imports or [])


def read_stored_study(spec: dict[str, Any], file: str) -> Study:
    """A study as a store holds it (``Study.model_dump``), validated again; its ``imports`` loaded first, as here."""
    if spec.get("imports"):
        _import_own_modules(spec["imports"], Path(file))
    try:
        return Study.model_validate(spec)
    except pydantic.ValidationError as err:
        raise _spec_error(err, file or "the stored study") from None


def _import_own_modules(imports: Any, path: Path) -> None:
    """Import the study's ``imports`` (its folder first on ``sys.path``) before anything is validated."""
    if imports is None:
        return
    if not isinstance(imports, list):
        raise SpecError(f"'imports' is a list of module names, got {imports!r}", field="imports", file=str(path))
    add_search_path(path.resolve().parent)
    try:
        import_modules(imports)
    except SpecError as err:
        raise err.located(file=str(path)) from None


def _check_shadowed(raw: dict[str, Any], base_paths: list[str]) -> None:
    """An override of a base setting that a grid or zip axis sets in every run would change nothing: refuse it.

    Shadowed: the axis is the same path, a parent (axis ``optimizer`` replaces ``optimizer.lr``) or a
    child (axis ``optimizer.lr`` overrides part of ``--set optimizer={...}``).
    """
    zips = raw.get("zip") or []
    groups = [raw.get("grid") or {}, *([zips] if isinstance(zips, dict) else zips)]
    axes = [k for g in groups if isinstance(g, dict) for k in g if k != "label"]
    for key in base_paths:
        for axis in axes:
            if axis == key or key.startswith(axis + ".") or axis.startswith(key + "."):
                where = "grid" if axis in (raw.get("grid") or {}) else "zip"
                raise SpecError(f"'{key}' is set by the {where} axis '{axis}' in every run, so this override would be "
                                f"ignored; change the axis values in the spec instead",
                                file="--set", field=key)


def _spec_error(err: pydantic.ValidationError, file: str, prefix: str = "") -> SpecError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = list(first["loc"][:-1])
        allowed = _allowed_keys(err.title, parent)
        if err.title == "Study" and not parent and not prefix and str(first["loc"][-1]) in RunSpec.model_fields:
            msg += f": '{first['loc'][-1]}' is a setting of the base run: put it under base:"
        elif allowed:
            from ablab.registry import closest_names

            msg += "." + closest_names(str(first["loc"][-1]), allowed)
    got = first.get("input")
    if first["type"] != "extra_forbidden" and isinstance(got, (str, int, float, bool)) and "(got" not in msg:
        msg += f" (got {got!r})"
    field, msg = split_located(".".join(p for p in (prefix, loc) if p) or None, msg)
    return SpecError(msg, field=field, file=file)


def _allowed_keys(title: str, parent: list) -> list[str]:
    models = {"Study": Study, "RunSpec": RunSpec, "EvalSpec": EvalSpec}
    model = models.get(title)
    for part in parent:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return list(model.model_fields) if model is not None else []


def set_path(tree: dict[str, Any], path: str, value: Any, where: str = "") -> None:
    """Set ``tree[a][b][c] = value`` for ``path='a.b.c'``; a component given as a name becomes a dict."""
    parts = path.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        nxt = node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) else (
            node.get(part) if isinstance(node, dict) else None
        )
        if isinstance(nxt, str):
            nxt = {"name": nxt}
        elif nxt is None:
            nxt = {}
        elif not isinstance(nxt, (dict, list)):
            raise SpecError(f"cannot set '{path}': '{'.'.join(parts[: i + 1])}' is a value, not a mapping", field=where or path)
        if isinstance(node, list):
            node[int(part)] = nxt
        else:
            node[part] = nxt
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise SpecError(f"cannot set '{path}': index {last} out of range", field=where or path)
        node[int(last)] = value
    else:
        node[last] = value
