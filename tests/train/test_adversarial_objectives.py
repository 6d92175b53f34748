"""Adversarial objectives (seed 002 ch. 3: Eq. 3.1, ALP Eq. 3.2–3.7, logit squeezing, decoupled ALP Eq. 3.9–3.11),
each checked against a direct computation on a small model and batch (checks C3-2, C3-3, C3-5)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablab.registry import OBJECTIVES
from ablab.train.objectives import (StepSetup, decoupled_pairing, gradient_evaluations, l2_pairing, logit_cross_entropy,
                                    logit_dot, ratio_coefficient, squared_norm)
from conftest import TINY_BASE, run_refused, stored, tiny_study

FGSM = {"name": "fgsm", "eps": 0.1}
PGD3 = {"name": "pgd", "eps": 0.1, "step": 0.04, "steps": 3, "random_start": False}


def _model(seed=0, device="cpu"):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double().to(device)


def _batch(device="cpu"):
    g = torch.Generator().manual_seed(3)
    return (torch.rand(10, 6, generator=g, dtype=torch.float64).to(device),
            torch.randint(0, 4, (10,), generator=g).to(device))


def _objective(spec, model, lr=0.5, loss=F.cross_entropy, transforms=()):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return OBJECTIVES.create(spec, setup=StepSetup(model, opt, loss, transforms=transforms)), opt


def _sgd_by_hand(model, objective_value, lr=0.5):
    grads = torch.autograd.grad(objective_value, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p.sub_(lr * g)


def _fgsm_by_hand(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def _same_parameters(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


# ---- the loss pieces (exact checks of the seed's equations)


def test_alp_pairing_gradient_in_a_shared_logit_scale_is_eq_3_7():
    """C3-2: with logits γℓ and γℓ̃, ∂L/∂γ = γ·Σ_c (ℓ_c − ℓ̃_c)² ≥ 0 (Eq. 3.6–3.7), per example (batch of one)."""
    torch.manual_seed(0)
    l, lt = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    for g0 in (0.3, 1.0, 2.5):
        gamma = torch.tensor(g0, dtype=torch.float64, requires_grad=True)
        grad, = torch.autograd.grad(l2_pairing(gamma * l, gamma * lt), gamma)
        torch.testing.assert_close(grad, g0 * ((l - lt) ** 2).sum())
        assert grad > 0


def test_decoupled_alp_with_the_dot_product_is_l2_pairing_eq_3_10():
    """C3-3: ‖a − b‖² = ‖a‖² − 2aᵀb + ‖b‖²; Eq. 3.11 with h = −2aᵀb, c = 1, β = 1 is (twice ½) the L² pairing."""
    torch.manual_seed(1)
    a = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    decoupled = decoupled_pairing(logit_dot(a, b), a, b, beta=1.0, coefficient=1.0)
    paired = 2 * l2_pairing(a, b)
    torch.testing.assert_close(decoupled, paired)
    torch.testing.assert_close(torch.autograd.grad(decoupled, (a, b)), torch.autograd.grad(paired, (a, b)))


def test_h_is_the_cross_entropy_of_the_logit_distributions_with_its_gradient_flow():
    torch.manual_seed(2)
    a = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    direct = -(b.softmax(1) * a.log_softmax(1)).sum(1).mean()
    h = logit_cross_entropy(a, b, "adversarial")
    torch.testing.assert_close(h, direct)
    ga, gb = torch.autograd.grad(h, (a, b), allow_unused=True)
    assert gb is None and ga.abs().sum() > 0  # the adversarial distribution is a fixed target
    both = logit_cross_entropy(a, b, "none")
    torch.testing.assert_close(both, -(a.softmax(1) * b.log_softmax(1)).sum(1).mean())
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(both, (a, b)))


def test_the_ratio_coefficient_sets_the_value_and_passes_no_gradient():
    """C3-5: c·h = J̃ / ratio, and c is a constant to autograd (stop-gradient)."""
    w = torch.tensor([1.5, -0.5], dtype=torch.float64, requires_grad=True)
    loss, h = (w ** 2).sum(), (w.exp()).sum()
    c = ratio_coefficient(loss, h, 0.125)
    torch.testing.assert_close(c * h, loss / 0.125)
    grad, = torch.autograd.grad(c * h, w)
    torch.testing.assert_close(grad, (loss / h / 0.125).detach() * w.exp())


# ---- the steps, against SGD by hand


def test_adversarial_at_alpha_one_is_the_standard_step_bitwise():
    x, y = _batch()
    a, b = _model(), _model()
    adv, opt_a = _objective({"name": "adversarial", "attack": PGD3, "alpha": 1.0}, a)
    std, opt_b = _objective("standard", b)
    for _ in range(3):
        la, oa = adv.step(a, a, opt_a, x, y)
        lb, ob = std.step(b, b, opt_b, x, y)
        assert torch.equal(la, lb) and torch.equal(oa, ob)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_adversarial_training_is_eq_3_1_on_fgsm_examples(alpha):
    x, y = _batch()
    model, ref = _model(), _model()
    objective, opt = _objective({"name": "adversarial", "attack": FGSM, "alpha": alpha}, model)
    loss, out = objective.step(model, model, opt, x, y)
    x_adv = _fgsm_by_hand(ref, x, y, 0.1)
    j = alpha * F.cross_entropy(ref(x), y) + (1 - alpha) * F.cross_entropy(ref(x_adv), y)
    torch.testing.assert_close(loss, j.detach())
    torch.testing.assert_close(out, ref(x_adv).detach())
    _sgd_by_hand(ref, j)
    _same_parameters(model, ref)


def test_squeezing_on_top_of_pgd_training_adds_beta_times_the_squared_logits():
    x, y = _batch()
    model, ref = _model(), _model()
    objective, opt = _objective({"name": "adversarial", "attack": FGSM, "squeeze": 0.05}, model)
    objective.step(model, model, opt, x, y)
    out = ref(_fgsm_by_hand(ref, x, y, 0.1))
    _sgd_by_hand(ref, F.cross_entropy(out, y) + 0.05 * (out ** 2).sum(1).mean())
    _same_parameters(model, ref)


def test_logit_squeezing_on_its_own():
    x, y = _batch()
    model, ref = _model(), _model()
    objective, opt = _objective({"name": "logit_squeezing", "beta": 0.2}, model)
    loss, _ = objective.step(model, model, opt, x, y)
    out = ref(x)
    torch.testing.assert_close(loss, F.cross_entropy(out, y).detach())
    _sgd_by_hand(ref, F.cross_entropy(out, y) + 0.2 * (out ** 2).sum(1).mean())
    _same_parameters(model, ref)


def test_alp_step_is_eq_3_2_with_half_the_squared_logit_difference():
    x, y = _batch()
    model, ref = _model(), _model()
    objective, opt = _objective({"name": "alp", "attack": FGSM, "weight": 0.5}, model)
    objective.step(model, model, opt, x, y)
    clean, adv = ref(x), ref(_fgsm_by_hand(ref, x, y, 0.1))
    _sgd_by_hand(ref, F.cross_entropy(adv, y) + 0.5 * 0.5 * ((clean - adv) ** 2).sum(1).mean())
    _same_parameters(model, ref)


def test_decoupled_alp_step_is_eq_3_11_with_a_constant_coefficient():
    x, y = _batch()
    model, ref = _model(), _model()
    objective, opt = _objective({"name": "decoupled_alp", "attack": FGSM, "ratio": 0.125, "beta": 1e-3}, model)
    objective.step(model, model, opt, x, y)
    clean, adv = ref(x), ref(_fgsm_by_hand(ref, x, y, 0.1))
    j = F.cross_entropy(adv, y)
    h = -(adv.softmax(1).detach() * clean.log_softmax(1)).sum(1).mean()
    c = float((j / h).detach()) / 0.125  # a number: no gradient through the ratio
    _sgd_by_hand(ref, j + c * h + 1e-3 * ((clean ** 2).sum(1).mean() + (adv ** 2).sum(1).mean()))
    _same_parameters(model, ref)


def test_lrm_attacks_mixed_images_with_their_soft_labels_and_smoothing():
    from ablab.registry import LOSSES

    x, _ = _batch()
    soft = torch.tensor([[0.7, 0.3, 0.0, 0.0]] * 10, dtype=torch.float64)
    loss_fn = LOSSES.create({"name": "cross_entropy", "smoothing": 0.1})
    model, ref = _model(), _model()
    objective, opt = _objective({"name": "decoupled_alp", "attack": FGSM}, model, loss=loss_fn)
    objective.step(model, model, opt, x, soft)
    xr = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(ref(xr), soft), xr)  # the attack ascends the plain CE of the mix
    clean, adv = ref(x), ref((x + 0.1 * g.sign()).clamp(0, 1))
    j = loss_fn(adv, soft)
    h = -(adv.softmax(1).detach() * clean.log_softmax(1)).sum(1).mean()
    _sgd_by_hand(ref, j + float((j / h).detach()) / 0.125 * h + 1e-3 * (squared_norm(clean) + squared_norm(adv)))
    _same_parameters(model, ref)


def test_the_step_applies_the_preprocessing_the_loop_left_to_it():
    """The batch arrives in pixels; ``transforms`` (normalize) run inside the model's forward, the attack's too."""
    x, y = _batch()
    model, ref = _model(), _model()
    norm = lambda v, t, g: ((v - 0.5) / 0.25, t)  # noqa: E731
    objective, opt = _objective({"name": "adversarial", "attack": FGSM}, model, transforms=(norm,))
    objective.step(model, model, opt, x, y)
    wrapped = lambda v: ref((v - 0.5) / 0.25)  # noqa: E731
    xr = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(wrapped(xr), y), xr)
    _sgd_by_hand(ref, F.cross_entropy(wrapped((x + 0.1 * g.sign()).clamp(0, 1)), y))
    _same_parameters(model, ref)


@pytest.mark.parametrize("spec, evals", [
    ("standard", 1),
    ({"name": "adversarial", "attack": {"name": "pgd", "steps": 7}}, 8),
    ({"name": "adversarial", "attack": {"name": "pgd", "steps": 7}, "alpha": 0.5}, 9),
    ({"name": "adversarial", "attack": {"name": "pgd", "steps": 7}, "alpha": 1.0}, 1),
    ({"name": "adversarial", "attack": "fgsm"}, 2),
    ({"name": "alp", "attack": {"name": "pgd", "steps": 10}}, 12),
    ({"name": "decoupled_alp", "attack": {"name": "pgd", "steps": 10}}, 12),
    ({"name": "logit_squeezing", "beta": 0.1}, 1),
])
def test_each_objective_declares_its_gradient_evaluations(spec, evals):
    assert gradient_evaluations(OBJECTIVES.validate(spec)) == evals


# ---- through the CLI into the store


def test_a_study_with_every_objective_runs_end_to_end(write_study, tmp_path):
    from ablab.cli import main

    pgd = {"name": "pgd", "eps": 0.1, "step": 0.04, "steps": 2}
    study = tiny_study(zip={"label": ["pgd", "alp", "dalp", "squeeze"], "objective": [
        {"name": "adversarial", "attack": pgd}, {"name": "alp", "attack": pgd},
        {"name": "decoupled_alp", "attack": pgd, "ratio": 0.95}, {"name": "logit_squeezing", "beta": 0.01}]},
        seeds={"replicates": 1})
    study["base"].update(epochs=1, augment=["normalize"])
    assert main(["run", str(write_study(study)), "--out", str(tmp_path / "r")]) == 0
    metrics, runs = stored(tmp_path / "r")
    assert set(runs["status"]) == {"done"}
    acc = metrics[(metrics["split"] == "test") & (metrics["name"] == "accuracy")]
    assert len(acc) >= 4 and acc["value"].between(0, 1).all()


def _adv_study(**base):
    study = tiny_study()
    study["base"].update({"objective": {"name": "adversarial", "attack": FGSM}, **base})
    return study


@pytest.mark.parametrize("study, field, text", [
    (_adv_study(augment=["normalize", {"name": "random_crop", "padding": 1}]), "base.objective",
     "attacks pixels, before the preprocessing: list 'normalize' last"),
    (_adv_study(objective={"name": "adversarial", "attack": {"name": "fgsm", "bounds": [0.0, 0.5]}}),
     "base.objective.attack.bounds", "outside the attack's bounds [0.0, 0.5]"),
    (_adv_study(data="diabetes", loss="mse"), "base.objective:",
     "adversarial training attacks a classifier"),
    (_adv_study(objective={"name": "adversarial", "attack": {"name": "pgd", "eps": -0.1}}), "base.objective.attack",
     "greater than or equal to 0"),
    (_adv_study(objective={"name": "alp", "weight": -1}), "base.objective.weight", "greater than or equal to 0"),
    (_adv_study(objective={"name": "decoupled_alp", "ratio": 0}), "base.objective.ratio", "greater than 0"),
    (_adv_study(objective={"name": "adversarial", "alpha": 1.5}), "base.objective.alpha", "less than or equal to 1"),
])
def test_bad_adversarial_settings_exit_2_writing_nothing(study, field, text, write_study, tmp_path, capsys):
    err, path = run_refused(write_study, study, tmp_path, capsys)
    assert f"{path}: {field}" in err and text in err, err


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["adversarial", "alp", "decoupled_alp", "logit_squeezing"])
def test_every_objective_steps_on_cuda_as_on_cpu(name):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = {"name": name} if name == "logit_squeezing" else {"name": name, "attack": PGD3}
    results = []
    for device in ("cpu", "cuda"):
        x, y = _batch(device)
        model = _model(device=device)
        objective, opt = _objective(copy.deepcopy(spec), model)
        loss, out = objective.step(model, model, opt, x, y)
        assert out.device.type == device and torch.isfinite(loss)
        results.append([p.detach().cpu() for p in model.parameters()])
    for p, q in zip(*results):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)
