"""Imports run one way: a module imports only from its own layer or the layers below, and no import circles.

The layers follow the data flow (docs/architecture.md): spec → execute → train → store → analysis
→ report. Every module's imports are read with ``ast`` (imports inside functions too); a module's
implicit import of its parent package is not an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first: a module imports from its own layer and the layers listed before it, never after.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "files", "artifacts", "seeding", "selectors", "labels", "version", "registry", "plugins")),
    ("components", ("data", "models", "norm", "optim", "losses")),
    ("spec", ("spec",)),
    ("train", ("train",)),
    ("store", ("store",)),
    ("analysis", ("analysis",)),
    ("report", ("report", "export", "tfevents")),
    ("execute", ("execute",)),
    ("validate", ("validate", "validate_report", "step_time")),
    ("cli", ("cli", "cli_inspect", "__main__")),
    ("facade", ("", "components")),  # ablab/__init__.py and ablab/components.py: what `import ablab` loads
]

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted((SRC / "ablab").rglob("*.py"))}


def _imported(name: str, path: Path) -> set[str]:
    """The ablab modules ``name`` imports anywhere in its source (a ``from pkg import mod`` names the module)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return {_known(m) for m in found if m == "ablab" or m.startswith("ablab.")} - {name}


def _known(module: str) -> str:
    """The module itself, or the nearest package of it that exists (``ablab.x.attr`` → ``ablab.x``)."""
    while module not in MODULES:
        module = module.rpartition(".")[0]
    return module


GRAPH: dict[str, set[str]] = {name: _imported(name, path) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    """The index in LAYERS of a module's layer: by its first name under ``ablab``."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{module} is in no layer: add '{top}' to LAYERS in tests/test_layers.py")


def upward_arrows() -> list[tuple[str, str]]:
    """Every import from a module to a module of a higher layer."""
    return sorted((a, b) for a, targets in GRAPH.items() for b in targets if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_runs_against_the_flow():
    wrong = [f"{a} → {b} ({LAYERS[layer_of(a)][0]} imports {LAYERS[layer_of(b)][0]})"
             for a, b in upward_arrows()]
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_no_import_circles():
    circles = cycles(GRAPH)
    assert not circles, "import circles:\n" + "\n".join(" ↔ ".join(c) for c in circles)


def test_the_report_reads_no_training_code():
    """The report reads the store (and the components' registered facts), never ablab.train."""
    wrong = sorted((a, b) for a, targets in GRAPH.items() if a.startswith("ablab.report")
                   for b in targets if b.startswith("ablab.train"))
    assert not wrong, wrong


def test_the_graph_sees_lazy_and_relative_imports():
    assert "ablab.registry" in GRAPH["ablab.data.digits"]
    assert "ablab.store" in GRAPH["ablab"]  # inside ablab.load
    assert "ablab.models.convnets" in GRAPH["ablab.models"]  # from ablab.models import convnets
    assert "ablab.report.sections" not in GRAPH["ablab.report.sections.header"]  # the parent package's import


def test_cycles_finds_a_circle_and_only_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
