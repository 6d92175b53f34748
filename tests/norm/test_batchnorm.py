"""AblatedBatchNorm: frozen γ/β stay exact under optimizers, momentum convention, equivalence, invariants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ablab.components  # noqa: F401  (registers every component)
from ablab.errors import SpecError
from ablab.norm.batchnorm import AblatedBatchNorm, AblatedBatchNorm1d, AblatedBatchNorm2d
from ablab.registry import MODELS, NORMS

OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.1),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=0.1),
}


def small_model(affine: str) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8, bias=False), AblatedBatchNorm(8, affine=affine), nn.ReLU(), nn.Linear(8, 3)
    )


# --- (a) a frozen parameter is no parameter: exact after training, invisible to the optimizer ---


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("affine", ["gamma", "beta", "none"])
def test_frozen_parameters_stay_exact_and_out_of_the_optimizer(affine, optimizer):
    model = small_model(affine)
    bn = model[1]
    opt = OPTIMIZERS[optimizer](model.parameters())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen)
    y = torch.randint(0, 3, (64,), generator=gen)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    assert bn.learn_gamma == (affine == "gamma") and bn.learn_beta == (affine == "beta")
    if not bn.learn_gamma:
        assert bn.weight is None and torch.equal(bn.gamma, torch.ones(8))
    if not bn.learn_beta:
        assert bn.bias is None and torch.equal(bn.beta, torch.zeros(8))

    in_optimizer = [p for group in opt.param_groups for p in group["params"]]
    assert len(in_optimizer) == len(list(model.parameters()))
    learnable = [p for p in (bn.weight, bn.bias) if p is not None]
    assert len(in_optimizer) == 3 + len(learnable)  # two linear weights, the last bias, learnable γ/β
    assert all(any(p is q for q in model.parameters()) for p in in_optimizer)
    assert all(any(p is q for q in in_optimizer) for p in opt.state)
    assert {k for k in bn.state_dict()} == (
        {"running_mean", "running_var", "num_batches_tracked"}
        | ({"weight"} if bn.learn_gamma else set()) | ({"bias"} if bn.learn_beta else set())
    )
    if bn.learn_gamma:
        assert not torch.equal(bn.weight, torch.ones(8)) and bn.weight in opt.state
    if bn.learn_beta:
        assert not torch.equal(bn.bias, torch.zeros(8)) and bn.bias in opt.state


def test_the_registered_batchnorm_freezes_in_models_too():
    model = MODELS.create(
        {"name": "mlp", "widths": [8, 8], "norm": {"name": "batchnorm", "affine": "none"}}, in_shape=(4,), out_dim=3
    )
    norms = [m for m in model.modules() if isinstance(m, AblatedBatchNorm)]
    assert len(norms) == 2 and all(isinstance(m, nn.BatchNorm1d) for m in norms)
    assert not any("norm" in name for name, _ in model.named_parameters())


# --- (b) momentum is the new batch's weight (PyTorch's convention) ---


@pytest.mark.parametrize("cls", [AblatedBatchNorm, AblatedBatchNorm1d])
def test_momentum_is_the_weight_of_the_new_batch(cls):
    bn = cls(5, momentum=0.1).train()
    x = 3.0 + 2.0 * torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    bn(x)
    torch.testing.assert_close(bn.running_mean, 0.1 * x.mean(0), rtol=0, atol=1e-7)
    torch.testing.assert_close(bn.running_var, 0.9 * 1.0 + 0.1 * x.var(0, unbiased=True), rtol=0, atol=1e-6)
    assert bn.num_batches_tracked.item() == 1
    before = bn.running_mean.clone()
    bn.eval()(x)
    assert torch.equal(bn.running_mean, before) and bn.num_batches_tracked.item() == 1


# --- (c) gamma_beta is PyTorch's BatchNorm, exactly ---


@pytest.mark.parametrize(
    ("torch_cls", "shape"),
    [(nn.BatchNorm1d, (16, 7)), (nn.BatchNorm1d, (16, 7, 5)), (nn.BatchNorm2d, (16, 7, 5, 4))],
)
def test_gamma_beta_matches_torch_batchnorm_exactly(torch_cls, shape):
    gen = torch.Generator().manual_seed(0)
    ours, ref = AblatedBatchNorm(7, momentum=0.2, affine="gamma_beta"), torch_cls(7, momentum=0.2)
    with torch.no_grad():
        for m in (ours, ref):  # the same non-trivial γ, β in both
            m.weight.copy_(torch.linspace(0.5, 2.0, 7))
            m.bias.copy_(torch.linspace(-1.0, 1.0, 7))
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for _ in range(3):
        x = 1.5 + 2.0 * torch.randn(shape, generator=gen)
        assert torch.equal(ours.train()(x), ref.train()(x))
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = torch.randn(shape, generator=gen)
    assert torch.equal(ours.eval()(x), ref.eval()(x))
    ours_grad = torch.autograd.grad(ours.train()(x).square().sum(), [ours.weight, ours.bias])
    ref_grad = torch.autograd.grad(ref.train()(x).square().sum(), [ref.weight, ref.bias])
    assert all(torch.equal(a, b) for a, b in zip(ours_grad, ref_grad))


def test_loads_a_torch_batchnorm_state_dict():
    ref = nn.BatchNorm2d(4)
    ref.train()(torch.randn(8, 4, 3, 3))
    ours = AblatedBatchNorm2d(4)
    ours.load_state_dict(ref.state_dict())
    assert torch.equal(ours.running_var, ref.running_var)


def test_registered_factory_picks_dimension_and_checks_input():
    bn1 = NORMS.create({"name": "batchnorm", "affine": "beta"}, num_features=3, dim=1)
    bn2 = NORMS.create("batchnorm", num_features=3, dim=2)
    assert isinstance(bn1, nn.BatchNorm1d) and isinstance(bn2, nn.BatchNorm2d)
    assert bn1.affine_mode == "beta" and bn2.affine_mode == "gamma_beta"
    with pytest.raises(ValueError, match="4-d"):
        bn2(torch.randn(4, 3))
    with pytest.raises(ValueError, match="2 or 3-d"):
        bn1(torch.randn(4, 3, 2, 2))
    assert "affine" in NORMS.get_entry("batchnorm").description


def test_ablated_modes_match_torch_with_fixed_values():
    x = torch.randn(10, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    plain = nn.functional.batch_norm(x, None, None, training=True)
    assert torch.equal(AblatedBatchNorm(4, affine="none")(x), plain)
    bn = AblatedBatchNorm(4, affine="gamma")
    with torch.no_grad():
        bn.weight.fill_(2.0)
    assert torch.equal(bn(x), 2.0 * plain)


# --- (d) the DESIGN invariants in training mode ---


@pytest.mark.parametrize("shape", [(32, 6), (32, 6, 4, 4)])
def test_affine_none_standardizes_each_feature(shape):
    x = 5.0 + 3.0 * torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = AblatedBatchNorm(6, affine="none").double().train()(x)
    dims = [d for d in range(y.dim()) if d != 1]
    torch.testing.assert_close(y.mean(dims), torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.var(dims, unbiased=False), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch", [2, 4, 17])
def test_output_is_bounded_by_gamma_sqrt_b_minus_1(batch):
    gen = torch.Generator().manual_seed(batch)
    bn = AblatedBatchNorm(5, affine="gamma_beta").train()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(5, generator=gen))
        bn.bias.copy_(torch.randn(5, generator=gen))
    x = torch.randn(batch, 5, generator=gen)
    x[0] += 100.0  # one outlier per feature: the bound is nearly reached
    y = bn(x)
    bound = bn.weight.abs() * math.sqrt(batch - 1)
    excess = (y - bn.bias).abs().max(0).values
    assert torch.all(excess <= bound + 1e-5)
    assert torch.all(excess >= 0.99 * bound)


# --- validation ---


def test_unknown_affine_fails_validation_with_its_field():
    with pytest.raises(SpecError) as err:
        MODELS.validate({"name": "mlp", "norm": {"name": "batchnorm", "affine": "gama"}})
    assert err.value.field.endswith("affine")
    assert "gamma_beta" in err.value.message
    with pytest.raises(ValueError, match="affine"):
        AblatedBatchNorm(3, affine="gama")


def test_validated_spec_names_the_affine_default():
    spec = MODELS.validate({"name": "mlp", "norm": "batchnorm"})
    assert spec["norm"]["affine"] == "gamma_beta" and spec["norm"]["momentum"] == 0.1


# --- (e) one code path on every backend: γ and β are always tensors for F.batch_norm ---


def _old_path(bn: AblatedBatchNorm, x: torch.Tensor, running: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The former forward: ``None`` for an ablated γ or β (CUDA's backward rejects γ = None with β)."""
    return nn.functional.batch_norm(x, *running, bn.weight, bn.bias, True, bn.momentum, bn.eps)


@pytest.mark.parametrize("affine", ["gamma_beta", "gamma", "beta", "none"])
def test_every_variant_passes_tensors_for_gamma_and_beta(affine, monkeypatch):
    calls = []
    real = nn.functional.batch_norm

    def spy(x, mean, var, weight=None, bias=None, *args, **kwargs):
        calls.append((weight, bias))
        return real(x, mean, var, weight, bias, *args, **kwargs)

    monkeypatch.setattr(nn.functional, "batch_norm", spy)
    bn = AblatedBatchNorm2d(3, affine=affine)
    bn(torch.randn(4, 3, 2, 2))
    ((weight, bias),) = calls
    assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
    assert weight.requires_grad == bn.learn_gamma and bias.requires_grad == bn.learn_beta
    if not bn.learn_gamma:
        assert torch.equal(weight, torch.ones(3)) and not any(weight is p for p in bn.parameters())
    if not bn.learn_beta:
        assert torch.equal(bias, torch.zeros(3)) and not any(bias is p for p in bn.parameters())


@pytest.mark.parametrize("affine", ["gamma_beta", "gamma", "beta", "none"])
def test_constant_gamma_beta_give_the_numbers_of_the_none_path(affine):
    gen = torch.Generator().manual_seed(4)
    bn = AblatedBatchNorm2d(5, momentum=0.3, affine=affine)
    with torch.no_grad():
        for p in bn.parameters():
            p.copy_(torch.randn(5, generator=gen))
    x = (2.0 + 3.0 * torch.randn(8, 5, 3, 3, generator=gen)).requires_grad_()
    upstream = torch.randn(8, 5, 3, 3, generator=gen)
    running = (torch.zeros(5), torch.ones(5))
    new, old = bn.train()(x), _old_path(bn, x, running)
    assert torch.equal(new, old)
    assert torch.equal(bn.running_mean, running[0]) and torch.equal(bn.running_var, running[1])
    inputs = [x, *bn.parameters()]
    for a, b in zip(torch.autograd.grad(new, inputs, upstream), torch.autograd.grad(old, inputs, upstream)):
        assert torch.equal(a, b)


def test_the_constants_follow_device_and_dtype_but_are_not_saved():
    bn = AblatedBatchNorm1d(4, affine="none").double()
    assert bn.gamma.dtype == bn.beta.dtype == torch.float64
    assert not list(bn.parameters()) and set(bn.state_dict()) == {"running_mean", "running_var", "num_batches_tracked"}
    fresh = AblatedBatchNorm1d(4, affine="none")
    fresh.load_state_dict(bn.state_dict())  # strict: the constants are neither expected nor missing
    assert torch.equal(fresh.gamma, torch.ones(4)) and torch.equal(fresh.beta, torch.zeros(4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32 takes cuDNN's kernels
@pytest.mark.parametrize("affine", ["gamma_beta", "gamma", "beta", "none"])
def test_every_variant_trains_on_cuda_like_on_the_cpu(affine, dtype):
    """Issue 10, item 1: BN_β's backward failed on CUDA. Forward, backward and one SGD step, compared
    with the CPU (kernels differ in rounding only: tight in float64, float32's few ulps otherwise)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 6, 4, 4, generator=gen, dtype=torch.float64)
    upstream = torch.randn(16, 6, 4, 4, generator=gen, dtype=torch.float64)
    x, upstream = x.to(dtype), upstream.to(dtype)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    results = []
    for device in ("cpu", "cuda"):
        bn = AblatedBatchNorm2d(6, affine=affine).to(device, dtype)
        opt = torch.optim.SGD(bn.parameters(), lr=0.1, momentum=0.9) if bn.affine else None
        xd = x.to(device).requires_grad_()
        y = bn.train()(xd)
        y.backward(upstream.to(device))
        if opt:
            opt.step()
        results.append([t.detach().cpu() for t in (y, xd.grad, bn.gamma, bn.beta, bn.running_var)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    cuda_gamma, cuda_beta = results[1][2], results[1][3]
    assert torch.equal(cuda_gamma, torch.ones(6, dtype=dtype)) or affine in ("gamma_beta", "gamma")
    assert torch.equal(cuda_beta, torch.zeros(6, dtype=dtype)) or affine in ("gamma_beta", "beta")
