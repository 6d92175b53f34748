"""Packed replicas (issue 24): R runs that differ only in their seeds, trained as one packed model, are
the R runs alone — bitwise on the CPU at one thread: every stored metric, every checkpoint's bytes,
every prediction file; no replica leaks into another; a diverging replica ends alone."""

from __future__ import annotations

import copy
import hashlib
import io
import struct

import pytest
import torch
from torch import nn

from ablab.registry import MODELS
from ablab.spec import RunSpec
from ablab.train.inputs import StoredFile, UnitFiles
from ablab.train.loop import train
from ablab.train.packed import PackedLinear, packability, train_pack
from conftest import TINY_BASE

BASE = {**copy.deepcopy(TINY_BASE), "model": {"name": "mlp", "widths": [24, 16], "dropout": 0.2},
        "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 2, "batch_size": 100,
        "record": {"every_steps": 1, "checkpoints": {"every_epochs": 1},
                   "evaluators": ["standard", {"name": "predictions", "splits": ["test"]}]}}

CASES = {
    "mlp-adam-l2-dropout": {"weight_decay": {"value": 0.01, "mode": "l2"}},
    "mlp-sgd-nesterov-decoupled-tanh-mixup": {
        "model": {"name": "mlp", "widths": [20], "activation": "tanh", "dropout": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
        "weight_decay": {"value": 0.01, "mode": "decoupled", "params": "gamma_to_one"},
        "augment": [{"name": "mixup", "alpha": 0.4}]},
    "linear-adamw-optimizer-decay": {"model": "linear", "optimizer": {"name": "adamw", "lr": 0.01},
                                     "weight_decay": {"value": 0.0}, "loss": "mse"},
    "mlp-sgd-all-decay-gelu": {"model": {"name": "mlp", "widths": [16], "activation": "gelu"},
                               "optimizer": {"name": "sgd", "lr": 0.05},
                               "weight_decay": {"value": 0.001, "mode": "l2", "params": "all"}},
    "mlp-sgd-non-iid-lr-multipliers": {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                                       "sampler": {"name": "non_iid", "k": 2}, "lr_multipliers": {"bias": 0.1},
                                       "weight_decay": {"value": 0.001, "mode": "decoupled", "params": "exclude_norm"}},
}


@pytest.fixture(autouse=True)
def one_thread():
    """Packed runs equal the runs alone bitwise at one intra-op thread (docs/packing.md)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _spec(seed: int, **changes) -> RunSpec:
    data = {**copy.deepcopy(BASE), **copy.deepcopy(changes)}
    data["seeds"] = {"init": seed, "shuffle": seed + 100, "augment": seed + 200, "stochastic": seed + 300}
    data["replicate"] = seed
    return RunSpec.model_validate(data)


def _checkpoint(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


def _same(a, b) -> bool:
    """Equal nested checkpoint contents: tensors bitwise, everything else by ==."""
    if isinstance(a, dict):
        return isinstance(b, dict) and sorted(a, key=str) == sorted(b, key=str) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _rows(metrics: list) -> list:
    """Metric rows with each value as its bits (NaN equals NaN, -0.0 differs from 0.0)."""
    return [(*row[:4], struct.pack("<d", row[4])) for row in metrics]


def _same_result(alone, packed) -> None:
    assert packed.status == alone.status, packed.error
    assert _rows(packed.metrics) == _rows(alone.metrics)  # every per-step loss, accuracy, lr and evaluation: bitwise
    assert sorted(packed.artifacts) == sorted(alone.artifacts)
    for name in alone.artifacts:  # checkpoints (unpacked format) and predictions: the same bytes
        assert packed.artifacts[name] == alone.artifacts[name], name


@pytest.mark.parametrize("case", list(CASES))
def test_packed_replicas_equal_the_runs_alone_bitwise(case):
    specs = [_spec(s, **CASES[case]) for s in range(3)]
    assert packability(specs[0]).refusal is None
    packed = train_pack(specs)
    for spec, result in zip(specs, packed):
        _same_result(train(spec), result)
        assert result.info["packed"]["replicas"] == 3


def test_one_replica_packed_is_the_run_alone():
    spec = _spec(7)
    _same_result(train(spec), train_pack([spec])[0])


def test_replicas_do_not_leak_into_each_other():
    """Changing replica 3's seeds (every stream: its init, data order, mixing draws, dropout) leaves the
    other replicas bitwise unchanged."""
    specs = [_spec(s) for s in range(4)]
    base = train_pack(specs)
    changed = train_pack([*specs[:2], _spec(40), specs[3]])
    assert changed[2].metrics != base[2].metrics
    for i in (0, 1, 3):
        assert changed[i].metrics == base[i].metrics
        assert all(changed[i].artifacts[n] == base[i].artifacts[n] for n in base[i].artifacts)


def test_a_replica_continued_alone_from_its_packed_checkpoint_is_the_packed_run():
    """init_from a packed replica's epoch-1 checkpoint, trained alone to epoch 2 = the packed replica at epoch 2."""
    specs = [_spec(s) for s in range(3)]
    packed = train_pack(specs)
    data = packed[1].artifacts["checkpoint_e0001.pt"]
    cont = RunSpec.model_validate({**specs[1].model_dump(), "init_from": {"run": specs[1].id, "epoch": 1}})
    files = UnitFiles({(specs[1].id, 1): StoredFile(hashlib.sha256(data).hexdigest(), data=data)})
    alone = train(cont, files=files)
    assert alone.status == "done"
    after = [m for m in packed[1].metrics if m[1] == 2]
    assert [m for m in alone.metrics if m[1] == 2] == after
    # the same contents (a restored optimizer's state_dict pickles differently from one never saved, packed or not)
    assert _same(_checkpoint(alone.artifacts["checkpoint_e0002.pt"]), _checkpoint(packed[1].artifacts["checkpoint_e0002.pt"]))


def test_a_pack_of_continued_runs_equals_them_alone():
    """init_from in a pack: every replica restores its own model, optimizer state and streams first."""
    source = train(_spec(0))
    data = source.artifacts["checkpoint_e0001.pt"]
    files = UnitFiles({(_spec(0).id, 1): StoredFile(hashlib.sha256(data).hexdigest(), data=data)})
    # the same source continued with other shuffle/stochastic seeds (seed 002 §5.3.4: vary one source from epoch N)
    conts = [RunSpec.model_validate({**_spec(0).model_dump(), "epochs": 3, "init_from": {"run": _spec(0).id, "epoch": 1},
                                     "seeds": {"init": 0, "shuffle": s, "augment": 200, "stochastic": s}})
             for s in (100, 5, 6)]
    for alone_spec, result in zip(conts, train_pack(conts, files=[files] * 3)):
        _same_result(train(alone_spec, files=files), result)


def _nan_linear(in_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    """A linear model whose bias is NaN for about half of the ``init`` seeds (a draw from that stream)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(in_shape).prod()), out_dim))
    if torch.rand(()) < 0.5:
        with torch.no_grad():
            model[1].bias[0] = float("nan")
    return model


@pytest.fixture
def nan_model():
    MODELS.register("test_nan_linear", "test only: NaN bias for some init seeds")(_nan_linear)
    yield "test_nan_linear"
    del MODELS._entries["test_nan_linear"]


def test_a_diverging_replica_is_diverged_while_the_others_finish(nan_model):
    specs = [_spec(s, model=nan_model) for s in range(6)]
    alone = [train(s) for s in specs]
    statuses = [r.status for r in alone]
    assert "diverged" in statuses and "done" in statuses  # the seeds draw both
    for a, p in zip(alone, train_pack(specs)):
        _same_result(a, p)


def test_packed_linear_gradients_are_the_unpacked_ones():
    """PackedLinear's forward and backward against nn.Linear per replica (the layouts MKL rounds alike)."""
    g = torch.Generator().manual_seed(0)
    layers = [nn.Linear(64, 10) for _ in range(5)]
    x = torch.randn(5, 33, 64, generator=g)
    up = torch.randn(5, 33, 10, generator=g)
    w = torch.stack([m.weight.detach() for m in layers]).requires_grad_()
    b = torch.stack([m.bias.detach() for m in layers]).requires_grad_()
    out = PackedLinear.apply(x, w, b)
    (out * up).sum().backward()
    for r, m in enumerate(layers):
        y = m(x[r])
        (y * up[r]).sum().backward()
        assert torch.equal(out[r], y)
        assert torch.equal(w.grad[r], m.weight.grad) and torch.equal(b.grad[r], m.bias.grad)


@pytest.fixture
def other_objective():
    from ablab.registry import OBJECTIVES
    from ablab.train.objectives import StandardStep

    OBJECTIVES.register("test_other_step", "test only: the standard step under another name")(StandardStep)
    yield "test_other_step"
    del OBJECTIVES._entries["test_other_step"]


def test_an_objective_that_does_not_pack_says_so(other_objective):
    why = packability(_spec(0, objective={"name": other_objective})).refusal
    assert why == "objective 'test_other_step' is not packed (packs: standard, sam)"


@pytest.mark.parametrize("changes, why", [
    ({"model": "mnist_cnn"}, "model 'mnist_cnn' is not packed"),
    ({"model": {"name": "one_hidden_conv", "activation": "gelu"}}, "activation GELU in a convolutional model"),
    ({"compute": {"precision": "bf16"}}, "compute options"),
])
def test_what_cannot_be_packed_says_why(changes, why):
    assert why in packability(_spec(0, **changes)).refusal


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_replicas_on_cuda_match_the_runs_alone():
    """On CUDA (deterministic kernels): cuBLAS may pick other kernels for a batch of products, so the
    losses agree within 1e-6 relative over the first 100 steps; statuses and steps agree exactly."""
    specs = [_spec(s, device="cuda", model={"name": "mlp", "widths": [24, 16]}, epochs=7) for s in range(3)]
    for spec, result in zip(specs, train_pack(specs)):
        alone = train(spec)
        assert result.status == alone.status == "done"
        rows = [(m, n) for m, n in zip(alone.metrics, result.metrics) if m[2] == "batch" and m[3] == "loss"][:100]
        assert all(m[:4] == n[:4] for m, n in rows)
        assert all(abs(m[4] - n[4]) <= 1e-6 * abs(m[4]) for m, n in rows)




def test_a_packed_checkpoint_is_in_the_unpacked_format():
    """The replica's checkpoint holds its own state dict, [out, in] weights, its own stream states."""
    specs = [_spec(s) for s in range(2)]
    state = _checkpoint(train_pack(specs)[1].artifacts["checkpoint_e0002.pt"])
    assert state["model"]["fc0.weight"].shape == (24, 64) and state["seeds"]["init"] == 1
    assert state["step"] == 2 * 13 and state["epoch"] == 2  # 1257 training examples in batches of 100


def test_the_replicas_of_a_pack_share_one_dataset(monkeypatch):
    """The pack places its dataset on the device once; every replica reads that one (read-only) copy."""
    import ablab.train.build as build

    calls = []
    real = build.load_run_data
    monkeypatch.setattr(build, "load_run_data", lambda spec: calls.append(spec.id) or real(spec))
    specs = [_spec(s, model={"name": "mlp", "widths": [8]}, epochs=1) for s in range(3)]
    results = train_pack(specs)
    assert [r.status for r in results] == ["done"] * 3 and calls == [specs[0].id]


def test_a_replica_whose_set_up_fails_fails_alone_and_the_others_train_as_alone():
    """Replica 0's checkpoint is missing (its set-up fails): it is ``failed``; replicas 1 and 2 take the pack's
    first slots and still equal their runs alone."""
    source = train(_spec(0))
    data = source.artifacts["checkpoint_e0001.pt"]
    files = UnitFiles({(_spec(0).id, 1): StoredFile(hashlib.sha256(data).hexdigest(), data=data)})
    conts = [RunSpec.model_validate({**_spec(0).model_dump(), "epochs": 3, "init_from": {"run": _spec(0).id, "epoch": 1},
                                     "seeds": {"init": 0, "shuffle": s, "augment": 200, "stochastic": s}})
             for s in (100, 5, 6)]
    results = train_pack(conts, files=[UnitFiles(), files, files])
    assert results[0].status == "failed"
    for spec, result in zip(conts[1:], results[1:]):
        _same_result(train(spec, files=files), result)
