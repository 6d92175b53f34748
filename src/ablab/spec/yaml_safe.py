"""A strict, bounded YAML reader for study specs.

``yaml.safe_load`` builds no objects, but a hostile or mistaken spec can still hurt: a billion-laughs
alias tree expands to gigabytes, a duplicate key silently replaces the first (``epochs: 1`` then
``epochs: 50`` trains 50), ``.inf`` passes as a learning rate, and deep nesting raises a
``RecursionError``. Each is one ``SpecError`` here, before anything is built.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

MAX_BYTES = 1_000_000  # a study spec is a few kilobytes
MAX_ALIASES = 100  # references to anchors (``*name``) in one document
MAX_DEPTH = 50  # nesting of mappings and lists
MAX_NODES = 200_000  # values in the document with every alias expanded


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, non-finite numbers, many aliases and deep nesting."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001  (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} alias references (*name); a spec needs few")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {key_node.start_mark.line + 1}; first on line "
                    f"{seen[key] + 1}): the second would silently replace the first", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node):  # noqa: ANN001
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise yaml.constructor.ConstructorError(
                None, None, f"'{node.value}' is not a finite number", node.start_mark)
        return value


_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with the limits above; ``yaml.YAMLError`` says what was refused."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_BYTES // 1000} kB; a study spec is a few kilobytes")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    if _expanded_size(data, {}) > MAX_NODES:
        raise yaml.YAMLError(f"more than {MAX_NODES} values once its aliases are expanded (an alias bomb?)")
    return data


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """Values in ``obj`` counting shared sub-trees (aliases) once per use; memoised, so a bomb is cheap."""
    if isinstance(obj, (dict, list)):
        if id(obj) in memo:
            return memo[id(obj)]
        memo[id(obj)] = MAX_NODES + 1  # a cycle counts as too large
        items = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        total = 1
        for item in items:
            total += _expanded_size(item, memo)
            if total > MAX_NODES:
                break
        memo[id(obj)] = total
        return total
    return 1
