"""Learning-rate multipliers and weight decay on γ/β (seed 002 §4.3.3), declared by parameter class."""

import copy

import pytest
import torch
from torch import nn

from ablab.optim.groups import CLASSES, MULTIPLIER_RULES, RULES, create_param_groups
from ablab.spec import RunSpec
from ablab.train.build import build_optimizer, build_run
from conftest import run_refused, tiny_study

LR, WD = 0.2, 0.1
BN_MLP = {"name": "mlp", "widths": [16], "norm": "batchnorm"}


def spec(**extra) -> RunSpec:
    base = {"data": {"name": "digits", "val_size": 200, "test_size": 100}, "model": BN_MLP,
            "optimizer": {"name": "sgd", "lr": LR}, "epochs": 1, "batch_size": 32, "device": "cpu"}
    return RunSpec.model_validate({**base, **extra})


def expected_class(name: str, p: torch.Tensor, model: nn.Module) -> str:
    """The class by hand: the owning module's type, then the parameter's shape."""
    module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "norm_scale" if name.endswith("weight") else "norm_shift"
    return "bias" if p.ndim == 1 else "weight"


def test_the_optimizer_groups_carry_the_multipliers_and_the_schedule_keeps_them():
    run = build_run(spec(lr_multipliers={"bias_norm": 0.1}, schedule={"name": "cosine"}))
    model, opt = run.model, run.optimizer
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    factor_of = {id(p): g["lr_multiplier"] for g in opt.param_groups for p in g["params"]}
    classes = {expected_class(n, p, model) for n, p in model.named_parameters()}
    assert classes == set(CLASSES)  # the MLP with BN has every class
    for name, p in model.named_parameters():
        factor = 1.0 if expected_class(name, p, model) == "weight" else 0.1
        assert factor_of[id(p)] == factor and lr_of[id(p)] == pytest.approx(LR * factor, rel=0, abs=1e-15), name
    assert sorted(run.base_lrs) == sorted(g["lr"] for g in opt.param_groups)
    assert run.base_lrs[0] == LR  # the first group is the unscaled one: the logged lr is the optimizer's


@pytest.mark.parametrize("rule", list(MULTIPLIER_RULES))
def test_each_rule_scales_exactly_its_classes(rule):
    model = build_run(spec()).model
    groups = create_param_groups(model, WD, "exclude_norm", "l2", lr_multipliers={rule: 0.5})
    factor_of = {id(p): g["lr_multiplier"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert factor_of[id(p)] == (0.5 if expected_class(name, p, model) in MULTIPLIER_RULES[rule] else 1.0)


def test_a_frozen_or_ablated_parameter_is_in_no_group():
    run_spec = spec(model={**BN_MLP, "norm": {"name": "batchnorm", "affine": "beta"}},
                    lr_multipliers={"norm": 0.1}, weight_decay={"value": WD, "params": "gamma_to_one"})
    model = build_run(run_spec).model
    frozen = model.get_parameter(next(n for n, p in model.named_parameters() if p.ndim == 2))
    frozen.requires_grad_(False)
    opt = build_optimizer(run_spec, model).optimizer
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert all(p is not frozen for p in grouped)
    assert len(grouped) == sum(p.requires_grad for p in model.parameters())
    assert not any(n.endswith("norm.weight") or "gamma" in n for n, _ in model.named_parameters())  # γ ablated
    assert {g["name"] for g in opt.param_groups} == {"decay", "decay×0.1"}  # no γ: no norm_scale group


@pytest.mark.parametrize("mode", ["decoupled", "l2"])
@pytest.mark.parametrize("rule", ["gamma_to_one", "all", "exclude_norm"])
def test_one_step_equals_a_hand_step(rule, mode):
    """One step of the engine = θ − lr_c·(g + λ_c(θ − c)) by hand, per class c (C4-8: the penalty's gradient
    is λ(γ − 1) or λγ; β always toward 0; plain SGD, where l2 and decoupled coincide)."""
    run_spec = spec(lr_multipliers={"bias_norm": 0.1}, weight_decay={"value": WD, "params": rule, "mode": mode})
    run = build_run(run_spec)
    model = run.model
    with torch.no_grad():  # γ away from 1 so that its centre shows
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x, y = run.data.splits["train"].rows(torch.arange(32))
    hand = copy.deepcopy(model)
    loss = run.loss_fn(hand(x), y)
    grads = torch.autograd.grad(loss, list(hand.parameters()))
    expected = {}
    for (name, p), g in zip(hand.named_parameters(), grads):
        cls = expected_class(name, p, hand)
        decays = rule != "exclude_norm" or cls in ("weight", "bias")
        centre = 1.0 if rule == "gamma_to_one" and cls == "norm_scale" else 0.0
        lr = LR * (1.0 if cls == "weight" else 0.1)
        expected[name] = p.detach() - lr * (g + (WD * (p.detach() - centre) if decays else 0))
    run.objective.step(model, run.forward, run.optimizer, x, y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=0, atol=1e-6, msg=name)


def test_every_decay_rule_has_its_classes_declared():
    from ablab.optim.groups import DECAYED

    assert set(DECAYED) == set(RULES) and all(c <= set(CLASSES) for c in MULTIPLIER_RULES.values())


def test_no_multipliers_keeps_the_run_id():
    assert spec().id == spec(lr_multipliers={}).id != spec(lr_multipliers={"bias": 0.1}).id


def test_with_the_optimizers_own_decay_every_group_keeps_it():
    run = build_run(spec(optimizer={"name": "sgd", "lr": LR, "weight_decay": 5e-4}, lr_multipliers={"bias_norm": 0.1}))
    assert [g["weight_decay"] for g in run.optimizer.param_groups] == [5e-4, 5e-4]


def test_a_rule_matching_no_parameter_is_refused(write_study, tmp_path, capsys):
    study = tiny_study()
    study["base"]["lr_multipliers"] = {"norm": 0.1}  # the MLP has no norm layer
    err, path = run_refused(write_study, study, tmp_path, capsys)
    assert path in err and "lr-multiplier rule 'norm' matches no trainable parameter" in err


@pytest.mark.parametrize("value, words", [({"norms": 0.1}, "unknown lr-multiplier rule 'norms'"),
                                          ({"bias": 0.0}, "must be a positive number"),
                                          ({"bias": 0.1, "bias_norm": 0.2}, "both select bias")])
def test_bad_multipliers_are_refused(value, words, write_study, tmp_path, capsys):
    study = tiny_study()
    study["base"]["lr_multipliers"] = value
    err, path = run_refused(write_study, study, tmp_path, capsys)
    assert path in err and "lr_multipliers" in err and words in err


def test_the_report_spec_section_shows_each_class_decay_and_multiplier(write_study, tmp_path, capsys):
    from ablab.cli import main

    study = tiny_study(seeds={"replicates": 1}, grid={"weight_decay.params": ["exclude_norm", "gamma_to_one"]})
    study["base"].update({"model": BN_MLP, "epochs": 1, "lr_multipliers": {"bias_norm": 0.1},
                          "weight_decay": {"value": 0.001, "mode": "decoupled"}})
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out), "--report", "--threads", "1"]) == 0, \
        capsys.readouterr().err
    page = (out / "report" / "index.html").read_text()
    table = page[page.index('<table class="param-groups">'):]
    table = table[:table.index("</table>")]
    assert "exclude_norm (decoupled)" in table and "gamma_to_one (decoupled)" in table
    assert "norm_scale: λ 0, lr ×0.1" in table and "norm_scale: λ 0.001 → 1, lr ×0.1" in table
    assert "weight: λ 0.001, lr ×1" in table and "bias: λ 0.001, lr ×0.1" in table
