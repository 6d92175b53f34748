"""The shape of the training code, read from its source: a short, flat ``_train``; no store in train/."""

import ast
from pathlib import Path

import ablab.train
from ablab.train import loop

TRAIN = Path(ablab.train.__file__).parent
BLOCKS = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try, ast.Match)


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _depth(node: ast.AST) -> int:
    """The deepest nesting of block statements (for, while, if, with, try, match) below ``node``."""
    below = max((_depth(child) for child in ast.iter_child_nodes(node)), default=0)
    return below + isinstance(node, BLOCKS)


def test_the_training_function_is_short_flat_and_has_no_inner_functions():
    tree = ast.parse(Path(loop.__file__).read_text())
    fn = _function(tree, "_train")
    assert fn.end_lineno - fn.lineno + 1 <= 50
    assert max(_depth(stmt) for stmt in fn.body) <= 3
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    assert not [n for n in ast.walk(fn) if isinstance(n, functions) and n is not fn]


def test_the_depth_measure_counts_nested_blocks():
    code = ("def f():\n    with a:\n        for x in y:\n"
            "            if x:\n                while z:\n                    pass\n")
    assert max(_depth(s) for s in _function(ast.parse(code), "f").body) == 4


def _store_imports(path: Path) -> set[tuple[str, str, str]]:
    """(file, module, name) of every import of ablab.store in ``path``, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(path.name, a.name, "") for a in node.names if a.name.startswith("ablab.store")}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module.startswith("ablab.store"):
                found |= {(path.name, node.module, a.name) for a in node.names}
            elif node.module == "ablab":
                found |= {(path.name, "ablab", a.name) for a in node.names if a.name.startswith("store")}
    return found


def test_no_training_module_imports_the_store():
    found = set().union(*(_store_imports(p) for p in sorted(TRAIN.rglob("*.py"))))
    assert not found, sorted(found)


def test_the_import_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from ablab.store import Store\n    import ablab.store_io\n")
    assert _store_imports(module) == {("m.py", "ablab.store", "Store"), ("m.py", "ablab.store_io", "")}
