"""Packed convolutional replicas (issue 24): one_hidden_conv, 3c3d and resnet6/10/14, with BatchNorm in every
affine mode of seed 001 (§3.1.1) and without a norm, trained packed are the runs alone — bitwise on the CPU at
one thread: every per-step loss, accuracy and lr, every evaluation, every checkpoint's bytes (BatchNorm's running
statistics included); no replica leaks into another; a packed replica continued alone is the packed run."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablab.spec import RunSpec
from ablab.train.inputs import StoredFile, UnitFiles
from ablab.train.loop import train
from ablab.train.packed import packability, train_pack
from ablab.train.packed_layers import _Conv2d, conv_plan
from conftest import TINY_BASE
from test_packed import _checkpoint, _same, _same_result

BASE = {**copy.deepcopy(TINY_BASE), "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "batch_size": 64,
        "record": {"every_steps": 1, "checkpoints": {"final": True},
                   "evaluators": ["standard", {"name": "predictions", "splits": ["test"]}]}}
DIGITS16 = {"name": "digits", "size": 16, "channels": 1}

CASES = {  # every affine mode (gamma, beta, none on two models), and no norm for each kind of model
    "one_hidden_conv-bn": ({"name": "one_hidden_conv", "norm": "batchnorm"}, {}),
    "one_hidden_conv-none-adam-l2": ({"name": "one_hidden_conv", "channels": 16},
                                     {"optimizer": {"name": "adam", "lr": 0.01},
                                      "weight_decay": {"value": 0.01, "mode": "l2"}}),
    "3c3d-bn-gamma": ({"name": "3c3d", "norm": {"name": "batchnorm", "affine": "gamma"}},
                      {"data": DIGITS16, "steps": 6}),
    "3c3d-none-adamw": ({"name": "3c3d"}, {"data": DIGITS16, "steps": 6, "optimizer": {"name": "adamw", "lr": 0.001}}),
    "resnet6-bn-none": ({"name": "resnet6", "norm": {"name": "batchnorm", "affine": "none"}}, {}),
    "resnet6-no-norm-decoupled": ({"name": "resnet6", "norm": "none"},
                                  {"weight_decay": {"value": 0.001, "mode": "decoupled"}}),
    "resnet10-bn-beta-crop": ({"name": "resnet10", "norm": {"name": "batchnorm", "affine": "beta"}},
                              {"augment": [{"name": "random_crop", "padding": 1}]}),
    "resnet14-bn-gamma_beta-preact": ({"name": "resnet14", "preactivation": True}, {"steps": 8}),
    "resnet10-bn-gamma-mixup": ({"name": "resnet10", "norm": {"name": "batchnorm", "affine": "gamma"}},
                                {"augment": [{"name": "mixup", "alpha": 0.4}], "steps": 8}),
    "one_hidden_conv-bn-none": ({"name": "one_hidden_conv", "norm": {"name": "batchnorm", "affine": "none"}},
                                {"steps": 12}),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Packed runs equal the runs alone bitwise at one intra-op thread (docs/packing.md)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _spec(seed: int, model: dict, **changes) -> RunSpec:
    data = {**copy.deepcopy(BASE), "model": model, **copy.deepcopy(changes)}
    if "epochs" not in changes:
        data.pop("epochs")
        data.setdefault("steps", 10)
    data["seeds"] = {"init": seed, "shuffle": seed + 100, "augment": seed + 200, "stochastic": seed + 300}
    data["replicate"] = seed
    return RunSpec.model_validate(data)


@pytest.mark.parametrize("case", list(CASES))
def test_packed_conv_replicas_equal_the_runs_alone_bitwise(case):
    model, changes = CASES[case]
    specs = [_spec(s, model, **changes) for s in range(3)]
    assert packability(specs[0]).refusal is None
    for spec, result in zip(specs, train_pack(specs)):
        _same_result(train(spec), result)
        assert result.info["packed"] == {"replicas": 3, "index": spec.replicate}


def test_one_conv_replica_packed_is_the_run_alone():
    spec = _spec(5, {"name": "resnet6"})
    _same_result(train(spec), train_pack([spec])[0])


def test_conv_replicas_do_not_leak_and_keep_their_own_norm_statistics():
    """Replica 2's seeds changed (its init, data order, crops): the others bitwise unchanged; each replica's
    BatchNorm running statistics are its own (they differ between replicas and equal the run alone's)."""
    model, changes = {"name": "one_hidden_conv", "norm": "batchnorm"}, {"augment": [{"name": "random_crop",
                                                                                      "padding": 1}]}
    specs = [_spec(s, model, **changes) for s in range(4)]
    base = train_pack(specs)
    changed = train_pack([*specs[:2], _spec(40, model, **changes), specs[3]])
    assert changed[2].metrics != base[2].metrics
    for i in (0, 1, 3):
        assert changed[i].metrics == base[i].metrics
        assert all(changed[i].artifacts[n] == base[i].artifacts[n] for n in base[i].artifacts)
    final = [_checkpoint(r.artifacts["checkpoint_e0001.pt"])["model"] for r in base]
    assert final[0]["norm0.num_batches_tracked"] == 10
    assert not torch.equal(final[0]["norm0.running_mean"], final[1]["norm0.running_mean"])
    alone = _checkpoint(train(specs[1]).artifacts["checkpoint_e0001.pt"])["model"]
    assert torch.equal(alone["norm0.running_var"], final[1]["norm0.running_var"])


def test_a_conv_replica_continued_alone_from_its_packed_checkpoint_is_the_packed_run():
    """init_from a packed resnet6 replica's epoch-1 checkpoint, trained alone to epoch 2 = the packed replica."""
    model = {"name": "resnet6", "norm": {"name": "batchnorm", "affine": "gamma"}}
    specs = [_spec(s, model, epochs=2, record={"every_steps": 5, "checkpoints": {"every_epochs": 1}})
             for s in range(2)]
    packed = train_pack(specs)
    data = packed[1].artifacts["checkpoint_e0001.pt"]
    cont = RunSpec.model_validate({**specs[1].model_dump(), "init_from": {"run": specs[1].id, "epoch": 1}})
    files = UnitFiles({(specs[1].id, 1): StoredFile(hashlib.sha256(data).hexdigest(), data=data)})
    alone = train(cont, files=files)
    assert alone.status == "done"
    assert [m for m in alone.metrics if m[1] == 2] == [m for m in packed[1].metrics if m[1] == 2]
    assert _same(_checkpoint(alone.artifacts["checkpoint_e0002.pt"]), _checkpoint(packed[1].artifacts["checkpoint_e0002.pt"]))


@pytest.mark.parametrize("shape, conv", [
    ((32, 1, 8, 8), nn.Conv2d(1, 64, 5, 2, 2, bias=False)),  # the digits conv: grouped weight gradient differs
    ((16, 16, 8, 8), nn.Conv2d(16, 16, 3, 1, 1)),
    ((8, 3, 12, 12), nn.Conv2d(3, 8, 3, 2, 0)),
])
def test_a_packed_convolution_is_each_replica_convolution_bitwise(shape, conv):
    """Output and every gradient of the packed convolution against nn.Conv2d per replica, whatever parts
    the per-shape plan takes grouped."""
    g = torch.Generator().manual_seed(0)
    layers = [copy.deepcopy(conv) for _ in range(3)]
    for m in layers:
        for p in m.parameters():
            p.data = torch.randn(p.shape, generator=g)
    xs = [torch.randn(shape, generator=g) for _ in layers]
    packed = _Conv2d(layers)
    x = torch.cat(xs, 1).requires_grad_()
    out = packed(x)
    up = torch.randn(out.shape, generator=g)
    (out * up).sum().backward()
    o = out.shape[1] // 3
    for r, (m, xr) in enumerate(zip(layers, xs)):
        xr = xr.clone().requires_grad_()
        y = m(xr)
        (y * up[:, r * o:(r + 1) * o]).sum().backward()
        assert torch.equal(out[:, r * o:(r + 1) * o], y)
        assert torch.equal(x.grad[:, r * shape[1]:(r + 1) * shape[1]], xr.grad)
        assert torch.equal(packed.weight.grad[r], m.weight.grad)
        if m.bias is not None:
            assert torch.equal(packed.bias.grad[r], m.bias.grad)


def test_the_conv_plan_is_measured_once_per_shape_and_draws_no_run_stream():
    state = torch.random.get_rng_state()
    geometry = ((2, 2), (2, 2), (1, 1))
    plan = conv_plan((32, 3, 8, 8), (3, 64, 1, 5, 5), False, geometry, 3, torch.device("cpu"), torch.float32)
    assert conv_plan((32, 3, 8, 8), (3, 64, 1, 5, 5), False, geometry, 3, torch.device("cpu"), torch.float32) is plan
    assert torch.equal(torch.random.get_rng_state(), state)


def test_packed_batchnorm_statistics_over_r_times_c_channels_are_per_replica():
    """One batch_norm over R·C channels = R batch norms over C channels (statistics, output, gradients)."""
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(16, 8, 4, 4, generator=g) * (r + 1) + r for r in range(3)]
    rm, rv = torch.zeros(24), torch.ones(24)
    out = F.batch_norm(torch.cat(xs, 1), rm, rv, None, None, True, 0.1, 1e-5)
    for r, x in enumerate(xs):
        m, v = torch.zeros(8), torch.ones(8)
        assert torch.equal(out[:, 8 * r:8 * (r + 1)], F.batch_norm(x, m, v, None, None, True, 0.1, 1e-5))
        assert torch.equal(rm[8 * r:8 * (r + 1)], m) and torch.equal(rv[8 * r:8 * (r + 1)], v)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", [{"name": "one_hidden_conv", "norm": "batchnorm"}, {"name": "resnet6"}])
def test_packed_conv_replicas_on_cuda_match_the_runs_alone(model):
    """On CUDA (deterministic kernels): cuDNN may pick other algorithms for a grouped convolution than the
    per-shape check saw, so the losses agree within 1e-6 relative over the first 100 steps."""
    specs = [_spec(s, model, device="cuda", epochs=3, record={"every_steps": 1}) for s in range(3)]
    for spec, result in zip(specs, train_pack(specs)):
        alone = train(spec)
        assert result.status == alone.status == "done"
        rows = [(m, n) for m, n in zip(alone.metrics, result.metrics) if m[2] == "batch" and m[3] == "loss"][:100]
        assert len(rows) == 60 and all(m[:4] == n[:4] for m, n in rows)
        assert all(abs(m[4] - n[4]) <= 1e-6 * abs(m[4]) for m, n in rows)


SAM_CASES = {
    "one_hidden_conv-bn-sam-probes": ({"name": "one_hidden_conv", "norm": "batchnorm"},
                                      {"objective": {"name": "sam", "rho": 0.1}}),
    "resnet6-bn-beta-asam-l2-probes": ({"name": "resnet6", "norm": {"name": "batchnorm", "affine": "beta"}},
                                       {"objective": {"name": "sam", "rho": 0.5, "adaptive": True}, "steps": 6,
                                        "weight_decay": {"value": 0.01, "mode": "l2"}}),
    "mlp-bn-dropout-sam-adam": ({"name": "mlp", "widths": [32, 16], "dropout": 0.2, "norm": "batchnorm"},
                                {"objective": {"name": "sam"}, "optimizer": {"name": "adam", "lr": 0.01}}),
}


@pytest.mark.parametrize("case", list(SAM_CASES))
def test_packed_sam_and_probes_equal_the_runs_alone_bitwise(case):
    """SAM/ASAM packed: each replica's ascent from its own global gradient norm, its BatchNorm statistics frozen
    in the second pass; ``norm_params`` and ``relu_sparsity`` record each replica's own values: the same files."""
    model, changes = SAM_CASES[case]
    record = {**BASE["record"], "probes": ["norm_params", {"name": "relu_sparsity", "every_steps": 2}]}
    specs = [_spec(s, model, record=record, **changes) for s in range(3)]
    assert packability(specs[0]).refusal is None
    packed = train_pack(specs)
    for spec, result in zip(specs, packed):
        _same_result(train(spec), result)
    assert {"probe_relu_sparsity.npz"} <= set(packed[0].artifacts)
    assert packed[0].artifacts["probe_relu_sparsity.npz"] != packed[1].artifacts["probe_relu_sparsity.npz"]


def test_packed_sam_replicas_do_not_leak():
    """Each replica's SAM ascent uses its own gradient norm: replica 1's data order changed leaves replicas 0 and 2
    bitwise unchanged."""
    model, changes = SAM_CASES["one_hidden_conv-bn-sam-probes"]
    specs = [_spec(s, model, **changes) for s in range(3)]
    base = train_pack(specs)
    other = specs[1].model_dump()
    other["seeds"]["shuffle"] = 77
    changed = train_pack([specs[0], RunSpec.model_validate(other), specs[2]])
    assert changed[1].metrics != base[1].metrics
    assert changed[0].metrics == base[0].metrics and changed[2].metrics == base[2].metrics
