"""The norm layers of seed 002, ch. 4 against independent computations (seed002.md §4.4, checks C4-3…C4-7).

Each reference is PyTorch's own layer (``nn.BatchNorm2d``, ``nn.GroupNorm``, ``nn.InstanceNorm2d``)
or the formula written out with float64 arithmetic, never the code under test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ablab.norm.batchnorm import AblatedBatchNorm2d
from ablab.norm.general import BatchGroupNorm, BatchRenorm
from ablab.norm.weighing import check_alpha, example_weighing, weighable_layers
from ablab.registry import NORMS

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]
NEW = {"ghost_batchnorm": {"ghost_size": 4}, "batch_group_norm": {"groups": 2, "examples": 2},
       "group_norm": {"groups": 2}, "layer_norm": {}, "instance_norm": {}, "batch_renorm": {}}
TOL = {"atol": 1e-5, "rtol": 1e-5}


def batch(n=16, c=8, h=5, w=3, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, h, w, generator=g) * 3 + torch.arange(c).reshape(1, c, 1, 1)).to(device)


def randomize_affine(layer, seed=1):
    """γ and β away from 1 and 0, the same on every layer given the same seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) + 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    return layer


@pytest.mark.parametrize("device", DEVICES)
def test_ghost_bn_with_b_prime_equal_to_the_batch_is_batchnorm(device):
    """C4-3: outputs, gradients and running statistics of ghost BN at B′ = B equal nn.BatchNorm2d's."""
    x = batch(device=device)
    ghost = randomize_affine(NORMS.create({"name": "ghost_batchnorm", "ghost_size": 16}, num_features=8, dim=2)).to(device)
    bn = randomize_affine(nn.BatchNorm2d(8)).to(device)
    for _ in range(3):
        torch.testing.assert_close(ghost(x), bn(x), **TOL)
    torch.testing.assert_close(ghost.running_mean, bn.running_mean, **TOL)
    torch.testing.assert_close(ghost.running_var, bn.running_var, **TOL)
    ghost.eval(), bn.eval()
    torch.testing.assert_close(ghost(x), bn(x), **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b_prime", [1, 2, 4, 8])
def test_each_consecutive_ghost_group_is_normalized(b_prime, device):
    """C4-4: before the affine transform every group of B′ consecutive examples has mean 0, biased variance 1."""
    x = batch(device=device).double()
    layer = BatchGroupNorm(8, examples=b_prime, eps=0.0, affine="none").to(device).double()
    if b_prime == 1:
        x = x + 0 * x  # one example per group: its own per-channel statistics (InstanceNorm)
    y = layer(x).reshape(16 // b_prime, b_prime, 8, -1)
    torch.testing.assert_close(y.mean(dim=(1, 3)), torch.zeros(16 // b_prime, 8, dtype=y.dtype, device=device))
    torch.testing.assert_close(y.var(dim=(1, 3), unbiased=False), torch.ones(16 // b_prime, 8, dtype=y.dtype,
                                                                             device=device))


def test_ghost_bn_groups_are_consecutive_examples_and_running_stats_are_the_full_batch():
    """Eq. 4.4 read as consecutive groups (seed002.md: the printed index is garbled); moving averages of the full batch."""
    x = batch().double()
    layer = BatchGroupNorm(8, examples=4, momentum=1.0, affine="none").double()
    y = layer(x)
    for start in range(0, 16, 4):
        part = x[start:start + 4]
        mean, var = part.mean(dim=(0, 2, 3), keepdim=True), part.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        torch.testing.assert_close(y[start:start + 4], (part - mean) / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(layer.running_mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(layer.running_var, x.var(dim=(0, 2, 3), unbiased=True))


@pytest.mark.parametrize("device", DEVICES)
def test_batch_group_norm_special_cases_are_torch_layers(device):
    """C4-6: BGN (G = C, E = B) is nn.BatchNorm2d; (G, 1) nn.GroupNorm; (C, 1) nn.InstanceNorm2d; in training mode."""
    x = batch(device=device)
    cases = [(BatchGroupNorm(8, groups=None, examples=None), nn.BatchNorm2d(8)),
             (BatchGroupNorm(8, groups=8, examples=16), nn.BatchNorm2d(8)),
             (BatchGroupNorm(8, groups=2, examples=1), nn.GroupNorm(2, 8)),
             (BatchGroupNorm(8, groups=1, examples=1), nn.GroupNorm(1, 8)),
             (BatchGroupNorm(8, groups=None, examples=1), nn.InstanceNorm2d(8, affine=True))]
    for ours, theirs in cases:
        ours, theirs = randomize_affine(ours).to(device), randomize_affine(theirs).to(device)
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
    # the general path (not PyTorch's kernels) with the same numbers: 2 channel groups × the whole batch
    ours = BatchGroupNorm(8, groups=2, examples=16, eps=0.0, affine="none").to(device).double()
    xd = x.double()
    ref = xd.reshape(16, 2, 4, -1)
    mean, var = ref.mean(dim=(0, 2, 3), keepdim=True), ref.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(ours(xd), ((ref - mean) / var.sqrt()).reshape(xd.shape))


@pytest.mark.parametrize("device", DEVICES)
def test_group_norm_evaluates_as_group_norm_and_keeps_moving_averages(device):
    x = batch(device=device)
    ours = randomize_affine(NORMS.create({"name": "group_norm", "groups": 4}, num_features=8, dim=2)).to(device)
    ref = randomize_affine(nn.GroupNorm(4, 8)).to(device)
    ours(x)
    torch.testing.assert_close(ours.running_mean, 0.1 * x.mean(dim=(0, 2, 3)), **TOL)
    ours.eval()
    torch.testing.assert_close(ours(x * 2 + 1), ref(x * 2 + 1), **TOL)


def eval_bn(x, layer):
    """Eval-mode BN written out: running statistics, float64."""
    shape = (1, -1, 1, 1)
    m, v = layer.running_mean.double().reshape(shape), layer.running_var.double().reshape(shape)
    return ((x.double() - m) / torch.sqrt(v + layer.eps) * layer.weight.double().reshape(shape)
            + layer.bias.double().reshape(shape))


def trained(layer, device="cpu"):
    layer = randomize_affine(layer).to(device).train()
    for seed in range(3):
        layer(batch(seed=seed + 10, device=device))
    return layer.eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [lambda: AblatedBatchNorm2d(8), lambda: BatchGroupNorm(8, examples=4),
                                  lambda: BatchRenorm(8)])
def test_example_weighing_alpha_0_is_eval_batchnorm_and_alpha_1_is_instance_norm(make, device):
    """C4-5 (Eq. 4.3): α = 0 gives eval-mode BN; α = 1 on a conv layer InstanceNorm with the same γ, β, ε."""
    layer = trained(make(), device)
    x = batch(seed=5, device=device)
    with example_weighing(layer, 0.0):
        torch.testing.assert_close(layer(x).double(), eval_bn(x, layer), **TOL)
    inorm = nn.InstanceNorm2d(8, affine=True, eps=layer.eps).to(device)
    with torch.no_grad():
        inorm.weight.copy_(layer.weight), inorm.bias.copy_(layer.bias)
    with example_weighing(layer, 1.0):
        torch.testing.assert_close(layer(x), inorm(x), **TOL)
    assert layer.example_weight is None  # restored


@pytest.mark.parametrize("device", DEVICES)
def test_example_weighing_in_between_is_the_formula(device):
    """Eq. 4.3 at α = 0.3 written out: μ and E[x²] mixed, σ² = E[x²] − μ², per example and channel (float64)."""
    layer = trained(AblatedBatchNorm2d(8), device)
    x = batch(seed=6, device=device)
    a = 0.3
    xd = x.double()
    own_x, own_x2 = xd.mean(dim=(2, 3), keepdim=True), xd.square().mean(dim=(2, 3), keepdim=True)
    m = layer.running_mean.double().reshape(1, -1, 1, 1)
    m2 = layer.running_var.double().reshape(1, -1, 1, 1) + m.square()
    mu = a * own_x + (1 - a) * m
    var = a * own_x2 + (1 - a) * m2 - mu.square()
    expected = (xd - mu) / torch.sqrt(var + layer.eps) * layer.weight.double().reshape(1, -1, 1, 1) \
        + layer.bias.double().reshape(1, -1, 1, 1)
    with example_weighing(layer, a):
        torch.testing.assert_close(layer(x).double(), expected, **TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_example_weighing_on_group_norm(device):
    """C4-7: α = 1 on a GN layer is nn.GroupNorm; α = 0 uses the moving averages pooled over each channel group."""
    layer = trained(BatchGroupNorm(8, groups=2, examples=1), device)
    ref = nn.GroupNorm(2, 8, eps=layer.eps).to(device)
    with torch.no_grad():
        ref.weight.copy_(layer.weight), ref.bias.copy_(layer.bias)
    x = batch(seed=7, device=device)
    with example_weighing(layer, 1.0):
        torch.testing.assert_close(layer(x), ref(x), **TOL)
    m = layer.running_mean.double().reshape(2, 4)
    m2 = layer.running_var.double().reshape(2, 4) + m.square()
    mu, ex2 = m.mean(1).repeat_interleave(4), m2.mean(1).repeat_interleave(4)
    shape = (1, -1, 1, 1)
    expected = ((x.double() - mu.reshape(shape)) / torch.sqrt(ex2 - mu.square() + layer.eps).reshape(shape)
                * layer.weight.double().reshape(shape) + layer.bias.double().reshape(shape))
    with example_weighing(layer, 0.0):
        torch.testing.assert_close(layer(x).double(), expected, **TOL)


def test_example_weighing_refuses_alpha_outside_0_1_and_finds_only_weighable_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), AblatedBatchNorm2d(8), nn.ReLU(), BatchGroupNorm(8, groups=2))
    assert len(weighable_layers(model)) == 2
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
            check_alpha(bad)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        with example_weighing(model, 2.0):
            pass


@pytest.mark.parametrize("device", DEVICES)
def test_batch_renorm_with_rmax_1_dmax_0_is_batchnorm(device):
    """Ioffe 2017 with r clipped to 1 and d to 0: BatchNorm (outputs, gradients, running statistics)."""
    ours = randomize_affine(BatchRenorm(8, r_max=1.0, d_max=0.0, momentum=0.1)).to(device)
    ref = randomize_affine(nn.BatchNorm2d(8)).to(device)
    for seed in range(3):
        x = batch(seed=seed, device=device).requires_grad_(True)
        a, b = ours(x), ref(x)
        torch.testing.assert_close(a, b, **TOL)
        ga, = torch.autograd.grad(a.square().sum(), x)
        gb, = torch.autograd.grad(b.square().sum(), x)
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)


def test_batch_renorm_corrects_toward_the_moving_averages_within_its_limits():
    """After the relaxation r and d are the clipped ratios (Ioffe 2017, Alg. 1), written out in float64."""
    layer = BatchRenorm(8, r_max=1.5, d_max=0.5, relax_start=0, relax_end=0, d_relax_end=0, affine="none").double()
    with torch.no_grad():
        layer.running_mean.fill_(1.0), layer.running_var.fill_(4.0)
    x = batch(seed=3).double()
    mu_b, var_b = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    sigma_b, sigma = torch.sqrt(var_b + 1e-5), torch.sqrt(torch.tensor(4.0 + 1e-5, dtype=torch.float64))
    r = (sigma_b / sigma).clamp(1 / 1.5, 1.5)
    d = ((mu_b - 1.0) / sigma).clamp(-0.5, 0.5)
    s = (1, -1, 1, 1)
    expected = (x - mu_b.reshape(s)) / sigma_b.reshape(s) * r.reshape(s) + d.reshape(s)
    torch.testing.assert_close(layer(x), expected)
    assert layer.limits(0) == (1.5, 0.5)
    slow = BatchRenorm(8, r_max=3.0, d_max=5.0, relax_start=10, relax_end=20, d_relax_end=30)
    assert slow.limits(5) == (1.0, 0.0) and slow.limits(15) == (2.0, 1.25) and slow.limits(40) == (3.0, 5.0)
    ioffe = BatchRenorm(8)  # r_max 3 at 40k steps, d_max 5 at 25k, both BatchNorm until 5k (Ioffe 2017)
    assert ioffe.limits(5000) == (1.0, 0.0) and ioffe.limits(25000) == (1.0 + 2 * 20 / 35, 5.0)
    assert ioffe.limits(40000) == (3.0, 5.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(NEW))
@pytest.mark.parametrize("affine", ["gamma_beta", "gamma", "beta", "none"])
def test_every_layer_runs_with_every_affine_ablation(name, affine, device):
    """Seed 001's ablations: an ablated γ or β is no parameter and stays 1 or 0; training and eval run on (N, C) too."""
    for dim, x in ((2, batch(device=device)), (1, batch(device=device)[:, :, 0, 0])):
        layer = NORMS.create({"name": name, **NEW[name], "affine": affine}, num_features=8, dim=dim).to(device)
        names = {n for n, _ in layer.named_parameters()}
        expected = {"gamma_beta": {"weight", "bias"}, "gamma": {"weight"}, "beta": {"bias"}, "none": set()}[affine]
        assert names == expected
        assert set(layer.state_dict()) >= {"running_mean", "running_var"}
        x = x.clone().requires_grad_(True)
        out = layer.train()(x)
        out.square().sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
        assert torch.equal(layer.gamma, torch.ones(8, device=device)) or affine in ("gamma_beta", "gamma")
        assert torch.equal(layer.beta, torch.zeros(8, device=device)) or affine in ("gamma_beta", "beta")
        with torch.no_grad():
            assert torch.isfinite(layer.eval()(x)).all()


def test_bad_group_and_ghost_sizes_are_one_clear_error():
    with pytest.raises(ValueError, match="channel group count 3 does not divide the 8 channels"):
        BatchGroupNorm(8, groups=3)
    layer = BatchGroupNorm(8, examples=3)
    with pytest.raises(ValueError, match=r"3 examples per norm group \(B′\) do not divide the training batch of 16"):
        layer(batch())
    layer.eval()(batch())  # evaluation ignores B′
