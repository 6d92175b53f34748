"""Variant labels: readable names built from a variant's axis values (``optimizer=adam, lr=0.001``)."""

from __future__ import annotations

from typing import Any


def _label_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict) and "name" in value:
        rest = ", ".join(f"{k}={_label_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({rest})" if rest else str(value["name"])
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={_label_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_label_value(v) for v in value) + "]"
    return str(value)


def make_label(axes: dict[str, Any], named: frozenset[str] = frozenset()) -> str:
    """A readable variant label from its axis values: ``optimizer=adam, lr=0.001``.

    A zip group's ``label`` names that group's values (the axes in ``named``); axes from other
    groups are appended: ``bn_gamma, lr_scale=10``.
    """
    if not axes:
        return "base"
    parts = [str(axes["label"])] if "label" in axes else []
    for path, value in axes.items():
        if path == "label" or path in named:
            continue
        short = path[: -len(".name")] if path.endswith(".name") else path
        parts.append(f"{short}={_label_value(value)}")
    return ", ".join(parts)
