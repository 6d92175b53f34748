"""The attacks (seed 002 ch. 3, checks C3-4) against closed forms, invariants and torchattacks.

seed002.md §3.1 (L570–574): FGSM g(x) = x + ε·sign(∇ₓJ); PGD iterates FGSM with a projection onto the
L∞ ε-ball and an optional random start; §3.4 C3-4 lists the checks below.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablab.data.augment import normalize
from ablab.data.base import Dataset
from ablab.errors import SpecError
from ablab.registry import ATTACKS
from ablab.train.attacks import attack_generator, fgsm, margin_loss, pgd, spsa

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


def linear(device="cpu", features=12, classes=4, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(features, classes).to(device)


def batch(n=9, features=12, classes=4, device="cpu", seed=1, lo=0.2, hi=0.8):
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, features, generator=g)
    return x.to(device), torch.randint(classes, (n,), generator=g).to(device)


def closed_form_gradient(model: nn.Linear, x, y):
    """∇ₓ of the mean cross-entropy of softmax(Wx + b): (softmax − onehot) W / n, by hand."""
    p = torch.softmax(x @ model.weight.T + model.bias, -1)
    return (p - F.one_hot(y, p.shape[1]).to(p.dtype)) @ model.weight / len(x)


@pytest.mark.parametrize("device", DEVICES)
def test_fgsm_on_a_linear_softmax_model_is_the_closed_form(device):
    model, (x, y) = linear(device), batch(device=device)
    eps = 0.1  # x in [0.2, 0.8]: the [0, 1] clip never binds
    expected = x + eps * closed_form_gradient(model, x, y).sign()
    assert torch.equal(fgsm(model, x, y, eps), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_fgsm_with_predicted_labels_uses_the_models_classes(device):
    model, (x, _) = linear(device), batch(device=device)
    predicted = (x @ model.weight.T + model.bias).argmax(-1)
    wrong = (predicted + 1) % 4
    expected = x + 0.1 * closed_form_gradient(model, x, predicted).sign()
    assert torch.equal(fgsm(model, x, wrong, 0.1, labels="predicted"), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_iterates_stay_in_the_ball_and_in_bounds(device, norm, random_start):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)
    x, y = batch(device=device, lo=0.0, hi=1.0)  # pixels at the bounds: the clip binds
    eps = 0.3
    for steps in range(0, 6):
        adv = pgd(model, x, y, eps, 0.2, steps, random_start=random_start, norm=norm,
                  generator=attack_generator(0, device))
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps * (1 + 1e-6)).all()
        assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_raises_the_loss_and_fools_an_undefended_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = batch(n=64)
    adv = pgd(model, x, y, 0.3, 0.05, 20, generator=attack_generator(0))
    assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y) + 0.1


def test_zero_steps_is_the_identity():
    model, (x, y) = linear(), batch()
    assert torch.equal(pgd(model, x, y, 0.1, 0.01, 0, random_start=False), x)
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    assert torch.equal(spsa(model, x, y, 0.1, 0, generator=attack_generator(0)), x)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_adversarial_batch_bitwise(device):
    model, (x, y) = linear(device), batch(device=device)
    runs = [pgd(model, x, y, 0.1, 0.02, 5, generator=attack_generator(s, device)) for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    runs = [spsa(model, x, y, 0.1, 3, samples=8, generator=attack_generator(s, device)) for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_normalization_composes_inside_the_attack():
    """ε is in pixel units: attacking model∘normalize on pixels equals attacking, by hand, the pixel model
    W·((x − m)/s) + b, a linear model with weights W/s and bias b − W·m/s."""
    model = linear(features=3, classes=4)
    x, y = batch(features=3, lo=0.3, hi=0.7)
    x = x.view(-1, 3, 1, 1)
    data = Dataset("d", {}, in_shape=(3, 1, 1), out_dim=4)
    norm = normalize(data, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    net = nn.Sequential(nn.Flatten(), model)
    adv = fgsm(net, x, y, 0.05, transforms=(norm,))
    s, m = torch.tensor([0.2, 0.25, 0.5]), torch.tensor([0.5, 0.4, 0.3])
    pixel = nn.Linear(3, 4)
    with torch.no_grad():
        pixel.weight.copy_(model.weight / s)
        pixel.bias.copy_(model.bias - (model.weight * m / s).sum(1))
    expected = x.flatten(1) + 0.05 * closed_form_gradient(pixel, x.flatten(1), y).sign()
    assert torch.equal(adv.flatten(1), expected)
    assert (adv - x).abs().max() <= 0.05 + 1e-7  # the budget is in pixels, not in normalized units


def test_an_image_range_the_data_violate_is_refused():
    model, (x, y) = linear(), batch()
    with pytest.raises(ValueError, match=r"pixels in \[0.0, 1.0\]"):
        pgd(model, x * 3, y, 0.1, 0.01, 2, random_start=False)


@pytest.mark.parametrize("bad", [{"eps": -0.1}, {"steps": -1}, {"step": -0.01}])
def test_negative_eps_step_or_steps_is_a_spec_error(bad):
    with pytest.raises(SpecError):
        ATTACKS.create({"name": "pgd", **bad})
    with pytest.raises(ValueError, match="eps ≥ 0"):
        pgd(linear(), *batch(), **{"eps": 0.1, "step": 0.01, "steps": 2, **bad})


def test_the_mode_while_attacking_is_a_parameter_and_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    x, y = batch()
    model.train()
    stats = model[1].running_mean.clone()
    seen = []
    model[1].register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    pgd(model, x, y, 0.1, 0.01, 2, random_start=False)
    assert seen and not any(seen) and model.training
    seen.clear()
    pgd(model, x, y, 0.1, 0.01, 2, random_start=False, mode="train")
    assert seen and all(seen) and torch.equal(model[1].running_mean, stats)  # running statistics untouched
    model.eval()
    pgd(model, x, y, 0.1, 0.01, 1, random_start=False, mode="train")
    assert not model.training


def test_parameter_gradients_are_left_alone():
    model, (x, y) = linear(), batch()
    pgd(model, x, y, 0.1, 0.01, 3, random_start=False)
    assert all(p.grad is None for p in model.parameters())


def test_margin_loss_by_hand():
    out = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 0.0]])
    assert torch.equal(margin_loss(out, torch.tensor([1, 2])), torch.tensor([1.0, -5.0]))


def test_spsa_lowers_the_margin_and_stays_in_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = batch(n=16)
    adv = spsa(model, x, y, 0.2, 20, lr=0.02, samples=32, generator=attack_generator(0))
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert margin_loss(model(adv), y).mean() < margin_loss(model(x), y).mean() - 0.05


def test_registered_attacks_call_the_functions_with_their_parameters():
    model, (x, y) = linear(), batch()
    attack = ATTACKS.create({"name": "pgd", "eps": 0.1, "step": 0.02, "steps": 3, "random_start": False})
    assert attack.gradients == 3
    assert torch.equal(attack(model, x, y), pgd(model, x, y, 0.1, 0.02, 3, random_start=False))
    assert torch.equal(ATTACKS.create({"name": "fgsm", "eps": 0.1})(model, x, y), fgsm(model, x, y, 0.1))


def _torchattacks():
    return pytest.importorskip("torchattacks")


@pytest.mark.parametrize("device", DEVICES)
def test_fgsm_and_pgd_equal_torchattacks(device):
    """A maintained library's FGSM and PGD (random start off) give the same adversarial batch."""
    ta = _torchattacks()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)
    x, y = batch(n=32, device=device, lo=0.0, hi=1.0)
    x = x.view(32, 3, 2, 2)
    ours = fgsm(model, x, y, 8 / 255)
    theirs = ta.FGSM(model, eps=8 / 255)(x, y)
    assert torch.equal(ours, theirs)
    ours = pgd(model, x, y, 8 / 255, 2 / 255, 10, random_start=False)
    theirs = ta.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False)(x, y)
    assert torch.equal(ours, theirs)
