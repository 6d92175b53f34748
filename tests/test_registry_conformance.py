"""Every registered component of every kind: described, built from its defaults, run in a tiny study.

As timm tests every registered model: registering a component puts it under test. One study per
kind varies the component over every registered name (a ``zip`` axis) and runs through the CLI on
the CPU (and, marked ``gpu``, on CUDA): validation builds each run on the meta device, each trains a
few steps and is stored. Models have deeper checks in tests/models/test_registry_conformance.py.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import yaml

import ablab
from ablab.cli import main
from ablab.errors import SpecError
from ablab.registry import ALL_REGISTRIES, DATASETS, EVALUATORS, MODELS
from ablab.store import Store

# The parameters a study must give (no default, or one of two units), as a study would give them.
REQUIRED = {
    ("optimizer", "adam"): {"lr": 0.01}, ("optimizer", "adamw"): {"lr": 0.01}, ("optimizer", "sgd"): {"lr": 0.1},
    ("schedule", "piecewise"): {"factors": [1.0, 0.1], "boundaries_steps": [2]}, ("schedule", "step"): {"milestones_steps": [2]},
    ("evaluator", "activations"): {"layers": ["act0"], "examples": 8},
}
FILE_DATASETS = {"cifar10", "cifar100", "csv", "fashion_mnist", "image_folder", "mnist", "obesity", "svhn"}  # tests/data

TINY = {"data": {"name": "digits", "val_size": 20, "test_size": 20}, "model": {"name": "mlp", "widths": [16]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "steps": 3, "batch_size": 32, "device": "cpu",
        "record": {"every_steps": 1, "eval_splits": ["val"]}}


def _component(kind: str, name: str) -> dict:
    return {"name": name, **REQUIRED.get((kind, name), {})}


@pytest.mark.parametrize("kind, name", [(k, n) for k, r in ALL_REGISTRIES.items() for n in r.list_names()])
def test_every_component_is_described_and_builds_its_canonical_form_from_its_defaults(kind, name):
    registry = ALL_REGISTRIES[kind]
    assert registry.get_entry(name).description, "the docstring's first line is what `ablab list` shows"
    if kind == "dataset" and name in FILE_DATASETS:
        with pytest.raises(SpecError, match="needs parameter 'path'"):
            registry.validate({"name": name})
        return
    for key, p in registry.get_parameters(name).items():
        assert p.annotation is not inspect.Parameter.empty, f"{kind} {name}.{key} needs a type"
    spec = registry.validate(_component(kind, name))
    assert set(spec) == {"name", *registry.get_parameters(name)}  # every setting named in the canonical form


def _with(kind: str, name: str) -> tuple[str, dict]:
    """(axis path, value) placing component ``name`` of ``kind`` in the tiny run."""
    component = _component(kind, name)
    return {
        "dataset": ("data", {**component, **({"val_size": 20, "test_size": 20} if name == "digits" else {})}),
        "model": ("model", component),
        "norm": ("model", {"name": "mlp", "widths": [16], "norm": name}),
        "activation": ("model", {"name": "mlp", "widths": [16], "activation": name}),
        "optimizer": ("optimizer", component),
        "schedule": ("schedule", component),
        "loss": ("loss", component),
        "augmentation": ("augment", [component]),
        "probe": ("record.probes", [{**component, "every_steps": 1}]),
        "objective": ("objective", component),
        "evaluator": ("record.evaluators", [component]),
    }[kind]


def _runnable(kind: str) -> list[str]:
    """The names a tiny training run can use: no data files; evaluators of one model (ensembles evaluate stored runs)."""
    names = ALL_REGISTRIES[kind].list_names()
    if kind == "dataset":
        return [n for n in names if n not in FILE_DATASETS]
    if kind == "evaluator":
        return [n for n in names if EVALUATORS.get(n).members == 1]
    return names


def _study(kind: str, device: str) -> dict:
    names = _runnable(kind)
    placed = [_with(kind, n) for n in names]
    base = {**copy.deepcopy(TINY), "device": device}
    if kind == "dataset":  # tabular data: an MLP; regression: MSE
        tasks = [DATASETS.create(value).task for _, value in placed]
        return {"name": f"conform_{kind}", "base": base,
                "zip": {"label": names, "data": [v for _, v in placed],
                        "loss": ["mse" if t == "regression" else "cross_entropy" for t in tasks]}}
    if kind == "model":  # the image models at the size they were built for
        base["data"] = {**base["data"], "size": 32, "channels": 3}
    if kind == "schedule":  # snapshot_cosine cuts whole epochs into cycles
        base.pop("steps")
        base["epochs"] = 5
        base["data"] = {**base["data"], "val_size": 1600, "test_size": 20}  # 177 training examples: 6 steps an epoch
    return {"name": f"conform_{kind}", "base": base, "zip": {"label": names, placed[0][0]: [v for _, v in placed]}}


KINDS = [k for k in ALL_REGISTRIES if k != "report_section"]  # sections: tests/report/test_sections.py


def _check_kind(kind: str, device: str, tmp_path) -> None:
    spec = tmp_path / f"{kind}.yaml"
    spec.write_text(yaml.safe_dump(_study(kind, device)))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--threads", "1"]) == 0
    store = Store.open(out, readonly=True)
    try:
        runs = store.runs()
    finally:
        store.close()
    assert sorted(runs["label"]) == sorted(_runnable(kind))
    assert (runs["status"] == "done").all(), runs.loc[runs["status"] != "done", ["label", "status", "error"]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_component_runs_in_a_tiny_study_on_the_cpu(kind, tmp_path):
    _check_kind(kind, "cpu", tmp_path)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_every_component_runs_in_a_tiny_study_on_cuda(kind, tmp_path):
    _check_kind(kind, "cuda", tmp_path)


def test_the_tiny_studies_cover_every_runnable_name():
    for kind in KINDS:
        study = _study(kind, "cpu")
        assert study["zip"]["label"] == _runnable(kind)
    assert set(_runnable("evaluator")) >= {"standard", "predictions", "activations", "sharpness"}
    assert MODELS.list_names() == _runnable("model")
