"""Choosing runs by what they are: axis values, base-run settings, replicate, label.

Used by expansion (``init_from`` and post-hoc sources), by report baselines and by analysis; it
imports nothing from ablab, so readers of a store can use it without loading the components.
"""

from __future__ import annotations

from typing import Any

_ABSENT = object()


def lookup(path: str, axes: dict[str, Any], spec: dict[str, Any]) -> Any:
    """An axis value, else the value at the dotted path of the run's resolved spec."""
    if path in axes:
        return axes[path]
    node: Any = spec
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def same_value(want: Any, got: Any) -> bool:
    """Equal as values (0 == 0.0); a wanted mapping matches a mapping holding at least its items;
    a component name matches the component (``optimizer: sgd`` matches ``{name: sgd, lr: …}``)."""
    if got is _ABSENT:
        return False
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return float(want) == float(got)
    if isinstance(want, str) and isinstance(got, dict) and "name" in got:
        return got["name"] == want
    if isinstance(want, dict) and isinstance(got, dict):
        return all(k in got and same_value(v, got[k]) for k, v in want.items())
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(same_value(a, b) for a, b in zip(want, got))
    return want == got


def matches(selector: dict[str, Any], *, axes: dict[str, Any], spec: dict[str, Any], label: str, replicate: int) -> bool:
    """Does a run match every item of ``selector``? Keys: ``label``, ``replicate``, axis or spec paths."""
    for path, want in selector.items():
        if path == "label":
            got: Any = label
        elif path == "replicate":
            got = replicate
        else:
            got = lookup(path, axes, spec)
        if not same_value(want, got):
            return False
    return True
