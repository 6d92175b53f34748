"""How a value is written in a label: one spelling for run labels and for the axes of tables.

``ablab.spec`` names variants with it (``optimizer=adam, lr=0.001``); analysis and the report
name grid rows and columns with it. This module imports nothing from ablab, so readers of a
store (analysis, report) can use it without loading the components or the training code.
"""

from __future__ import annotations

from typing import Any


def label_value(value: Any) -> str:
    """``none`` for null, ``sgd(lr=0.1)`` for a named component, ``(rho=0.05)`` for a mapping, floats as ``%g``."""
    if value is None:
        return "none"
    if isinstance(value, dict) and "name" in value:
        rest = ", ".join(f"{k}={label_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({rest})" if rest else str(value["name"])
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={label_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(label_value(v) for v in value) + "]"
    return str(value)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 thread``, ``2 threads``: a count with its noun in the right number (``many``: an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
