"""examples/own_model through the command line, as a researcher runs it (from another folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import stored

from ablab.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_model"


def test_the_example_runs_resumes_and_reruns_after_an_edit(own_code_sandbox, monkeypatch):
    root = own_code_sandbox
    shutil.copytree(EXAMPLE, root / "example", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(root)  # not the spec's folder: the package is found next to the spec
    spec, out = str(root / "example" / "study.yaml"), str(root / "results")
    assert main(["run", spec, "--out", out, "--set", "epochs=1", "--report"]) == 0
    metrics, runs = stored(Path(out))
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    specs = list(runs["spec"])
    assert all(s["model"]["name"] == "res_mlp" and s["imports"] == ["own_models.models", "own_models.augment"]
               and set(s["code"]) == {"own_models"} for s in specs)
    final = metrics.query("split == 'test' and name == 'accuracy' and epoch == 1")  # epoch 0: before training
    assert len(final) == 4 and (final["value"] > 0.5).all()
    assert (Path(out) / "report" / "index.html").exists()

    first = set(runs["run"])
    assert main(["run", spec, "--out", out, "--set", "epochs=1"]) == 0  # unchanged code: the same runs, resumed
    assert set(_all_runs(out)["run"]) == first
    models = root / "example" / "own_models" / "models.py"
    models.write_text(models.read_text() + "\n# edited\n")  # any edit may change the numbers
    assert main(["run", spec, "--out", out, "--set", "epochs=1"]) == 0  # edited code: four new runs
    every = _all_runs(out)
    assert len(every) == 8 and set(every["status"]) == {"done"} and first < set(every["run"])


def _all_runs(out: str):
    from ablab.store import Store

    store = Store.open(out, readonly=True)
    try:
        return store.runs(all_runs=True)
    finally:
        store.close()
