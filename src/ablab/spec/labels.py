"""Variant labels: readable names built from a variant's axis values (``optimizer=adam, lr=0.001``)."""

from __future__ import annotations

from typing import Any

from ablab.labels import label_value as _label_value


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
