"""Every registered component of every registry, as timm tests every registered model.

Each name is built from its defaults (or the minimal example parameters in ``EXAMPLES``), put into
a tiny run (96 training digits, batch 32, a few steps), trained in-process on the CPU (and, marked
``gpu``, on CUDA), and keeps the promise of its kind. A component with a required parameter and no
example, or a registry with no place in a tiny run (``PLACES``), fails here: nothing new slips in
untested. Report sections are checked on two small stored studies (trained once per session).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import ablab.report.sections  # noqa: F401  (registers the report sections)
from ablab.errors import SpecError
from ablab.registry import (ACTIVATIONS, ALL_REGISTRIES, AUGMENTATIONS, DATASETS, EVALUATORS, LOSSES, MODELS, NORMS,
                            OPTIMIZERS, REPORT_SECTIONS, SCHEDULES)
from ablab.spec import RunSpec  # also registers every built-in component
from ablab.train.loop import train
from conftest import stored
from fileformats import make_images, write_cifar_batch, write_idx, write_png, write_svhn_mat
from obesity_csv import write_obesity_csv

BATCH = 32
DIGITS = {"name": "digits", "val_size": 1797 - 3 * BATCH - 64, "test_size": 64}  # 96 training images: 3 steps
RGB8 = {**DIGITS, "channels": 3}
RGB16 = {**RGB8, "size": 16}
RGB32 = {**RGB8, "size": 32}
MLP = {"name": "mlp", "widths": [16]}
BASE: dict[str, Any] = {
    "data": DIGITS, "model": MLP, "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": 1, "batch_size": BATCH,
    "device": "cpu", "record": {"every_steps": 1, "eval_splits": ["test"]},
}

FILES = "{files}"  # the session's folder of dataset files (``files`` fixture), filled in when built
EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    # the minimal parameters of each component whose factory has required ones (defaults otherwise)
    "dataset": {
        "cifar10": {"path": f"{FILES}/cifar-10-batches-py", "val_size": 8},
        "cifar100": {"path": f"{FILES}/cifar-100-python", "val_size": 8},
        "mnist": {"path": f"{FILES}/mnist", "val_size": 8},
        "fashion_mnist": {"path": f"{FILES}/mnist", "val_size": 8},
        "svhn": {"path": f"{FILES}/svhn", "val_size": 8},
        "image_folder": {"path": f"{FILES}/images", "size": 8},
        "csv": {"path": f"{FILES}/table.csv", "target": "level", "task": "classification"},
        "obesity": {"path": f"{FILES}/obesity.csv", "target": "classification"},
    },
    "optimizer": {"sgd": {"lr": 0.05}, "adam": {"lr": 0.01}, "adamw": {"lr": 0.01}},
    "schedule": {"piecewise": {"factors": [1.0, 0.1], "boundaries_steps": [2]},
                 "step": {"milestones_steps": [2]}},  # one of milestones_steps and milestones_epochs
    "evaluator": {"activations": {"layers": ["act0"], "examples": 16}, "autoattack": {"examples": 16}},
}
RUN_NEEDS: dict[tuple[str, str], dict[str, Any]] = {
    # what a component asks of the run around it, beyond its kind's place
    ("schedule", "snapshot_cosine"): {"epochs": 5},  # whole cycles of whole epochs (5 by default)
    ("model", "vgg11"): {"data": RGB32},  # five max-pools: 16 × 16 shrinks to nothing
}
POST_HOC_ONLY = {("evaluator", "disagreement"): "compares two or more models: run in the stored post-hoc study",
                 ("evaluator", "transfer"): "attacks one model and scores another: tests/train/test_robust.py"}

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


def filled(value: Any, files: Path) -> Any:
    """An example parameter with the session's file folder in place of ``FILES``."""
    return value.replace(FILES, str(files)) if isinstance(value, str) else value


def component(kind: str, name: str, files: Path) -> dict[str, Any]:
    """The spec of a registered component: its name and its example parameters (none: the defaults)."""
    return {"name": name, **{k: filled(v, files) for k, v in EXAMPLES.get(kind, {}).get(name, {}).items()}}


def _record(**extra: Any) -> dict[str, Any]:
    return {**BASE["record"], **extra}


PLACES: dict[str, Callable[[dict], dict[str, Any]]] = {
    # where a tiny run puts a component of each kind: the keys of BASE it replaces
    "dataset": lambda c: {"data": c, "model": {"name": "mlp", "widths": [8]}, "loss": _loss_for(c)},
    "model": lambda c: {"data": RGB16, "model": c, "epochs": None, "steps": 1,
                        "record": _record(evaluators=[{"name": "standard", "epochs": "last"}])},
    "norm": lambda c: {"model": {"name": "one_hidden_conv", "channels": 8, "norm": c, "norm_at": "all"}},
    "activation": lambda c: {"model": {**MLP, "activation": c["name"]}},  # a model names its activation only
    "optimizer": lambda c: {"optimizer": c},
    "schedule": lambda c: {"schedule": c},
    "loss": lambda c: {"loss": c},
    "augmentation": lambda c: {"data": RGB8, "augment": [c]},
    "probe": lambda c: {"model": {**MLP, "norm": "batchnorm"}, "record": _record(probes=[c]),
                        "epochs": 2},  # 6 steps: a probe records every 5 by default
    "objective": lambda c: {"objective": c},
    "evaluator": lambda c: {"record": _record(evaluators=[c])},
    "attack": lambda c: {"record": _record(evaluators=[{"name": "robust", "attack": c, "examples": 16}])},
}
NOT_TRAINED = {"report_section"}  # a part of the report page: checked on stored studies below

CASES = [(kind, name) for kind, reg in ALL_REGISTRIES.items() for name in reg.list_names()]
TRAINED = [pytest.param(k, n, id=f"{k}-{n}") for k, n in CASES if k not in NOT_TRAINED and (k, n) not in POST_HOC_ONLY]


def names(kind: str) -> list[str]:
    return [n for k, n in CASES if k == kind and (k, n) not in POST_HOC_ONLY]


def _loss_for(data: dict) -> str:
    return "cross_entropy" if DATASETS.create(data).task == "classification" else "mse"


def tiny_run(kind: str, name: str, files: Path, device: str = "cpu") -> RunSpec:
    """A tiny run of BASE with the component in its kind's place."""
    spec = {**BASE, **PLACES[kind](component(kind, name, files)), **RUN_NEEDS.get((kind, name), {}), "device": device}
    return RunSpec.model_validate(spec)


# ---- the session's files and runs -------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny runs on one CPU thread: on a shared, loaded machine two threads of small ops mostly wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Path:
    """Small files in each dataset's official format (the shared writers of tests/fileformats.py)."""
    root = tmp_path_factory.mktemp("dataset_files")
    labels = np.arange(50) % 10
    cifar10 = root / "cifar-10-batches-py"
    cifar10.mkdir()
    x = make_images(50, 3, 32, seed=0)
    write_cifar_batch(cifar10 / "data_batch_1", x[:40], {"labels": labels[:40]})
    write_cifar_batch(cifar10 / "test_batch", x[40:], {"labels": labels[40:]})
    cifar100 = root / "cifar-100-python"
    cifar100.mkdir()
    fine = np.arange(50) * 2
    for part, rows in (("train", slice(0, 40)), ("test", slice(40, 50))):
        write_cifar_batch(cifar100 / part, x[rows], {"fine_labels": fine[rows], "coarse_labels": fine[rows] // 5})
    (root / "mnist").mkdir()
    gray = make_images(50, 1, 28, seed=1)
    for prefix, rows in (("train", slice(0, 40)), ("t10k", slice(40, 50))):
        write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte", gray[rows, 0])
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte", labels[rows].astype(np.uint8))
    (root / "svhn").mkdir()
    write_svhn_mat(root / "svhn" / "train_32x32.mat", x[:40], labels[:40])
    write_svhn_mat(root / "svhn" / "test_32x32.mat", x[40:], labels[40:])
    for i, img in enumerate(make_images(30, 3, 8, seed=2)):
        write_png(root / "images" / "train" / ("ant", "bee", "cat")[i % 3] / f"{i:02d}.png", img)
    rng = np.random.RandomState(3)
    pd.DataFrame({"height": rng.normal(170, 10, 60), "colour": rng.choice(["red", "blue"], 60),
                  "level": rng.choice(["high", "low", "mid"], 60)}).to_csv(root / "table.csv", index=False)
    write_obesity_csv(root / "obesity.csv", n=70)
    return root


@pytest.fixture(scope="session")
def run_of(files) -> Callable[..., Any]:
    """``run_of(kind, name, device)``: the result of the component's tiny run, trained once per session."""
    results: dict[tuple[str, str, str], Any] = {}

    def run(kind: str, name: str, device: str = "cpu"):
        key = (kind, name, device)
        if key not in results:
            results[key] = train(tiny_run(kind, name, files, device))
        return results[key]

    return run


def finite_metrics(result) -> list[tuple]:
    """The result's metric rows, after asserting the run is done and every value finite."""
    assert result.status == "done", result.error
    assert result.metrics, "a run records metrics"
    bad = [row for row in result.metrics if not math.isfinite(row[-1])]
    assert not bad, bad
    return result.metrics


# ---- every name can be built and has a place ---------------------------------------------------------


def test_every_registry_has_a_place_in_a_tiny_run():
    assert set(ALL_REGISTRIES) == set(PLACES) | NOT_TRAINED, "a new registry needs a place in PLACES"


def test_examples_name_registered_components():
    for kind, examples in EXAMPLES.items():
        assert set(examples) <= set(ALL_REGISTRIES[kind].list_names()), kind
    for kind, name in [*RUN_NEEDS, *POST_HOC_ONLY]:
        assert name in ALL_REGISTRIES[kind], (kind, name)


@pytest.mark.parametrize("kind, name", [pytest.param(k, n, id=f"{k}-{n}") for k, n in CASES])
def test_every_component_is_described_and_its_parameters_typed(kind, name):
    registry = ALL_REGISTRIES[kind]
    assert registry.get_entry(name).description, "the docstring's first line is the description in `ablab list`"
    for key, p in registry.get_parameters(name).items():
        assert p.annotation is not inspect.Parameter.empty, f"{kind} '{name}': parameter '{key}' needs a type"


@pytest.mark.parametrize("kind, name", [pytest.param(k, n, id=f"{k}-{n}") for k, n in CASES])
def test_every_component_builds_from_its_defaults_or_an_example(kind, name, files):
    try:
        ALL_REGISTRIES[kind].validate(component(kind, name, files))
    except SpecError as err:
        pytest.fail(f"{kind} '{name}' cannot be built from its defaults ({err.render()}): "
                    "add its minimal parameters to EXAMPLES in this file")


# ---- every component trains in a tiny run ------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind, name", TRAINED)
def test_trains_in_a_tiny_run(kind, name, device, run_of):
    result = run_of(kind, name, device)
    rows = finite_metrics(result)
    plan = result.info
    assert {r[3] for r in rows if r[2] == "batch"} >= {"loss", "lr"}
    assert max(r[0] for r in rows) == plan["steps"] > 0
    assert plan["gradient_evaluations"] >= plan["steps"], "an objective evaluates the gradient at least once a step"


@pytest.mark.parametrize("kind, name", [p for p in TRAINED if p.values[0] in ("augmentation", "objective",
                                                                               "evaluator", "probe")])
def test_same_seed_same_numbers(kind, name, run_of, files):
    first, again = run_of(kind, name), train(tiny_run(kind, name, files))
    assert again.metrics == finite_metrics(first)  # bitwise: floats compare exactly
    assert {k: again.artifacts[k] for k in again.artifacts} == {k: first.artifacts[k] for k in first.artifacts}


# ---- the promise of each kind ------------------------------------------------------------------------


@pytest.mark.parametrize("name", names("dataset"))
def test_dataset_splits_agree_with_its_shape_and_task(name, files):
    ds = DATASETS.create(component("dataset", name, files))
    assert {"train", "test"} <= set(ds.splits) <= {"train", "val", "test"}
    assert len(ds.splits["train"]) > 0 and ds.out_dim > 0
    for split in ds.splits.values():
        x, y = split.rows(slice(None))
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == tuple(ds.in_shape) and len(y) == len(x)
        assert torch.isfinite(x).all()
        if ds.task == "classification":
            assert y.dtype == torch.int64 and (y >= 0).all() and (y < ds.out_dim).all()
        else:
            assert y.is_floating_point() and torch.isfinite(y).all()


def test_the_issue_models_are_registered():
    wanted = {"one_hidden_conv", "3c3d", "allcnnc", "vgg11", "preact_resnet18"}
    wanted |= {f"resnet{d}" for d in (6, 10, 14, 18)}
    assert wanted <= set(MODELS.list_names())


def build_model(name: str, data, seed: int, files: Path) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS.create(component("model", name, files), in_shape=data.in_shape, out_dim=data.out_dim)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", names("model"))
def test_model_gives_batch_by_out_dim_finite_grads_and_same_seed_same_numbers(name, device, files):
    data = DATASETS.create(tiny_run("model", name, files).data)  # the images of its tiny run
    a, b, c = (build_model(name, data, seed, files).to(device) for seed in (3, 3, 4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa), "the seed must matter"
    x, y = (t.to(device) for t in data.splits["train"].rows(slice(0, BATCH)))
    for mode in (False, True):
        outs = []
        for model in (a, b):
            torch.manual_seed(11)  # dropout draws
            outs.append(model.train(mode)(x))
        assert torch.equal(outs[0], outs[1]), f"train={mode}"
    out = outs[0]
    assert out.shape == (BATCH, data.out_dim) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y).backward()
    for pname, p in a.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", names("model"))
def test_model_takes_mnist_shaped_input_or_refuses_it_at_build_time(name, files):
    try:
        model = MODELS.create(component("model", name, files), in_shape=(1, 28, 28), out_dim=7)
    except SpecError as err:
        assert "needs larger inputs" in str(err), err
        return
    out = model.train()(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", names("norm"))
def test_norm_is_a_module_preserving_shape(name, files):
    gen = torch.Generator().manual_seed(0)
    for dim, shape in ((1, (BATCH, 6)), (2, (BATCH, 6, 4, 4))):
        layer = NORMS.create(component("norm", name, files), num_features=6, dim=dim)
        assert isinstance(layer, nn.Module)
        x = torch.randn(shape, generator=gen, requires_grad=True)
        for mode in (True, False):
            out = layer.train(mode)(x)
            assert out.shape == x.shape and torch.isfinite(out).all(), (dim, mode)
        out.square().sum().backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", names("activation"))
def test_activation_is_a_module_preserving_shape(name, files):
    act = ACTIVATIONS.create(component("activation", name, files))
    x = torch.randn(BATCH, 5, 3, generator=torch.Generator().manual_seed(0))
    assert isinstance(act, nn.Module)
    out = act(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", names("optimizer"))
def test_optimizer_steps(name, files):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = OPTIMIZERS.create(component("optimizer", name, files), params=model.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert all(not torch.equal(a, b) for a, b in zip(before, after)), "every parameter with a gradient moves"


@pytest.mark.parametrize("name", names("schedule"))
def test_schedule_factor_is_finite_and_non_negative_at_every_step(name, files):
    factor = SCHEDULES.create(component("schedule", name, files), total_steps=60, steps_per_epoch=12)
    values = [factor(step) for step in range(61)]
    assert all(math.isfinite(v) and v >= 0 for v in values), values


@pytest.mark.parametrize("name", names("loss"))
def test_loss_is_a_finite_scalar_alike_for_labels_and_their_one_hot_rows(name, files):
    loss_fn = LOSSES.create(component("loss", name, files))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, 10, generator=gen, requires_grad=True)
    y = torch.randint(0, 10, (BATCH,), generator=gen)
    loss = loss_fn(logits, y)
    assert loss.shape == () and math.isfinite(loss.item()) and loss.item() >= 0
    assert torch.allclose(loss, loss_fn(logits, nn.functional.one_hot(y, 10).float()))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def rgb8():
    return DATASETS.create(RGB8)


@pytest.mark.parametrize("name", names("augmentation"))
def test_augmentation_keeps_the_batch_and_soft_labels_sum_to_one(name, rgb8, files):
    aug = AUGMENTATIONS.create(component("augmentation", name, files), dataset=rgb8)
    x, y = rgb8.splits["train"].rows(slice(0, BATCH))
    soft = nn.functional.one_hot(y, rgb8.out_dim).float()
    for labels in (y, soft):
        out = [aug(x.clone(), labels.clone(), torch.Generator().manual_seed(7)) for _ in range(2)]
        (x1, y1), (x2, y2) = out
        assert x1.shape == x.shape and x1.dtype == x.dtype and torch.isfinite(x1).all()
        assert torch.equal(x1, x2) and torch.equal(y1, y2), "same generator state, same batch"
        if y1.is_floating_point():
            assert y1.shape == soft.shape and (y1 >= 0).all()
            assert torch.allclose(y1.sum(-1), torch.ones(BATCH))
        else:
            assert torch.equal(y1, y)


@pytest.mark.parametrize("name", names("evaluator"))
def test_evaluator_metrics_are_finite_and_declare_their_directions(name, run_of, files):
    result = run_of("evaluator", name)
    measured = {row[3] for row in finite_metrics(result) if row[2] != "batch"}
    assert measured or result.artifacts, "an evaluator measures a metric or stores an artifact"
    declared = EVALUATORS.create(component("evaluator", name, files)).directions(True)  # digits: classification
    assert measured <= set(declared), f"undeclared: {measured - set(declared)}"
    assert set(declared.values()) <= {"min", "max"} and result.directions.items() >= declared.items()
    assert all(len(result.artifacts[k]) > 0 for k in result.artifacts)


@pytest.mark.parametrize("name", names("probe"))
def test_probe_artifacts_are_not_empty(name, run_of):
    result = run_of("probe", name)
    finite_metrics(result)
    assert result.artifacts, "a probe records into the run's artifacts"
    assert all(len(result.artifacts[k]) > 0 for k in result.artifacts)


# ---- evaluators of several models, and report sections, on stored studies --------------------------

STORED_BASE = {
    **BASE, "epochs": 2, "model": {**MLP, "norm": "none"},
    "record": {"every_steps": 1, "eval_splits": ["train", "val", "test"], "checkpoints": {"final": True},
               "evaluators": ["standard", "predictions", {"name": "activations", "layers": ["act0"], "examples": 16},
                              {"name": "sharpness", "batches": 1, "hessian_iters": 2}],
               "probes": [{"name": "norm_params", "every_steps": 1}, {"name": "relu_sparsity", "every_steps": 1}]},
}


@pytest.fixture(scope="session")
def stored_studies(tmp_path_factory) -> dict[str, Path]:
    """A 2 × 2 grid × 2 seeds study and a post-hoc study of ensembles of two of its runs, run through the CLI."""
    from ablab.cli import main

    root = tmp_path_factory.mktemp("stored")
    study = {"name": "conform", "base": STORED_BASE, "seeds": {"replicates": 2},
             "grid": {"model.norm": ["none", "batchnorm"], "optimizer.lr": [0.05, 0.1]},
             "report": {"grids": [{"rows": "model.norm", "cols": "optimizer.lr", "metric": "test.loss"}],
                        "best": {"metric": "test.accuracy", "k": 2}}}
    post_hoc = {"name": "conform_post_hoc", "members": {"groups": 2},
                "source": {"study": str(root / "conform"), "runs": {"model.norm": "batchnorm", "optimizer.lr": 0.05}},
                "base": {"evaluators": [name for (kind, name) in POST_HOC_ONLY if kind == "evaluator"] + ["ensemble"],
                         "eval_splits": ["test"], "device": "cpu"}}
    out = {}
    for spec in (study, post_hoc):
        path = root / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec))
        out[spec["name"]] = root / spec["name"]
        assert main(["run", str(path), "--out", str(out[spec["name"]]), "--threads", "1"]) == 0
    return out


@pytest.mark.parametrize("kind, name", list(POST_HOC_ONLY))
def test_post_hoc_evaluator_metrics_are_finite_and_directed(kind, name, stored_studies):
    from ablab.store import Store

    metrics, runs = stored(stored_studies["conform_post_hoc"])
    assert list(runs["status"]) == ["done"]
    mine = metrics[(metrics["name"] == name) | metrics["name"].str.startswith(f"{name}_")]  # its name, or name_*
    values = mine["value"]
    assert len(values) > 0 and np.isfinite(values).all()
    store = Store.open(stored_studies["conform_post_hoc"], readonly=True)
    try:
        assert all(store.directions().get(m) in ("min", "max") for m in set(mine["name"]))
    finally:
        store.close()


@pytest.mark.parametrize("kind, name", list(POST_HOC_ONLY))
def test_an_evaluator_of_several_models_is_refused_before_a_training_study_starts(kind, name, tmp_path, capsys):
    from ablab.cli import main

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "several", "base": {**BASE, "record": _record(evaluators=[name])}}))
    code = main(["run", str(path), "--out", str(tmp_path / "results"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "post-hoc study" in err and "record.evaluators.0" in err
    assert not (tmp_path / "results").exists()  # refused before anything is written


@pytest.fixture(scope="module")
def report_contexts(stored_studies, tmp_path_factory):
    """A report context per stored study (reports written into a temporary folder)."""
    from ablab.report.context import ReportContext
    from ablab.store import Store

    stores = {name: Store.open(path, readonly=True) for name, path in stored_studies.items()}
    yield {name: ReportContext(store, tmp_path_factory.mktemp(f"report_{name}")) for name, store in stores.items()}
    for store in stores.values():
        store.close()


@pytest.mark.parametrize("name", REPORT_SECTIONS.list_names())
def test_report_section_applies_and_renders_on_stored_studies(name, report_contexts):
    section = REPORT_SECTIONS.create(name)
    for study, ctx in report_contexts.items():
        applies = section.applies(ctx)
        assert isinstance(applies, bool), study
        if applies:
            part = section.render(ctx)
            assert isinstance(part.html, str) and part.html.strip(), study
            assert all(Path(p).is_file() for p in [*part.figures, *part.tables]), study


def test_the_stored_studies_reach_the_sections_they_were_made_for(report_contexts):
    applying = {name for name in REPORT_SECTIONS.list_names() for ctx in report_contexts.values()
                if REPORT_SECTIONS.create(name).applies(ctx)}
    assert {"header", "variants", "curves", "final_table", "grids", "best", "sharpness", "variability", "cka",
            "norm_params", "relu_sparsity", "budget", "post_hoc_units", "spec"} <= applying
