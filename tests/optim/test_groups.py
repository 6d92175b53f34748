import pytest
import torch
from torch import nn

from ablab.optim.groups import (
    apply_decay_toward,
    create_param_groups,
    decoupled_decay_,
    decoupled_weight_decay_,
    group_l2_penalty,
    l2_penalty,
)

WD, LR = 0.1, 0.05


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Linear(8, 8), nn.LayerNorm(8), nn.Tanh(),
        nn.Linear(8, 3, bias=False),
    )


def names_by_group(model: nn.Module, groups: list[dict]) -> dict[str, set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {name_of[id(p)] for p in g["params"]} for g in groups}


def test_all_is_one_group_with_every_parameter():
    model = net()
    (group,) = create_param_groups(model, WD, "all")
    assert group["weight_decay"] == WD and len(group["params"]) == len(list(model.parameters()))


def test_exclude_bias_norm_puts_biases_and_norm_params_in_the_no_decay_group():
    model = net()
    groups = create_param_groups(model, WD, "exclude_bias_norm")
    by = names_by_group(model, groups)
    assert by["decay"] == {"0.weight", "3.weight", "6.weight"}
    assert by["no_decay"] == {"0.bias", "1.weight", "1.bias", "3.bias", "4.weight", "4.bias"}
    wd = {g["name"]: g["weight_decay"] for g in groups}
    assert wd == {"decay": WD, "no_decay": 0.0}


def test_any_one_dimensional_parameter_is_excluded():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3, bias=False)
            self.scale = nn.Parameter(torch.ones(3))

    model = Scaled()
    by = names_by_group(model, create_param_groups(model, WD, "exclude_bias_norm"))
    assert by == {"decay": {"lin.weight"}, "no_decay": {"scale"}}


def test_gamma_to_one_decays_norm_scales_toward_one_and_the_rest_toward_zero():
    model = net()
    groups = create_param_groups(model, WD, "gamma_to_one")
    by = names_by_group(model, groups)
    assert by["norm_scale"] == {"1.weight", "4.weight"}
    assert "1.bias" in by["decay"] and "0.bias" in by["decay"]
    scale = next(g for g in groups if g["name"] == "norm_scale")
    assert scale["decay_to"] == 1.0 and scale["decay_rate"] == WD and scale["weight_decay"] == 0.0


def test_decay_toward_one_has_one_as_fixed_point():
    bn = nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.5]))
    groups = create_param_groups(bn, WD, "gamma_to_one")
    for p in bn.parameters():
        p.grad = torch.zeros_like(p)
    apply_decay_toward(groups, lr=LR)
    assert torch.equal(bn.weight.detach(), torch.tensor([1.0, 2.0 - LR * WD * 1.0]))
    assert torch.equal(bn.bias.detach(), torch.tensor([0.0, 0.5]))  # toward 0 is the optimizer's job here


def test_decay_uses_the_group_lr_by_default_and_skips_params_without_grad():
    a, frozen = nn.Parameter(torch.tensor([2.0])), nn.Parameter(torch.tensor([2.0]))
    groups = [{"params": [a, frozen], "lr": 0.5, "decay_rate": 0.1, "decay_to": 1.0, "decay_mode": "decoupled"}]
    a.grad = torch.zeros(1)
    decoupled_decay_(groups)
    assert torch.allclose(a.detach(), torch.tensor([2.0 - 0.5 * 0.1 * 1.0]))
    assert torch.equal(frozen.detach(), torch.tensor([2.0]))


def test_modes_move_lambda_out_of_the_optimizer():
    model = net()
    for mode in ("decoupled", "l2"):
        groups = create_param_groups(model, WD, "all", mode=mode)
        assert all(g["weight_decay"] == 0.0 and g["decay_rate"] == WD for g in groups)


def test_l2_penalty_value():
    w = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert l2_penalty(w, 0.5).item() == pytest.approx(0.5 * 0.5 * (1 + 4 + 9))
    assert l2_penalty([torch.tensor([2.0, 0.0])], 1.0, center=1.0).item() == pytest.approx(0.5 * (1 + 1))


def _train(mode: str, make_opt, rule: str, steps: int = 4) -> nn.Module:
    model = net(0)
    groups = create_param_groups(model, WD, rule, mode=mode)
    for g in groups:
        g["lr"] = LR
    opt = make_opt(groups)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        if mode == "l2":
            loss = loss + group_l2_penalty(opt.param_groups)
        opt.zero_grad()
        loss.backward()
        decoupled_decay_(opt.param_groups)  # before the step: decays θ_{t−1} (SGDW)
        opt.step()
    return model


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("rule", ["all", "gamma_to_one"])
def test_l2_and_decoupled_agree_under_plain_sgd(rule):
    sgd = lambda groups: torch.optim.SGD(groups, lr=LR)
    l2, decoupled, native = (_params(_train(m, sgd, rule)) for m in ("l2", "decoupled", "optimizer"))
    assert torch.allclose(l2, decoupled, atol=1e-6, rtol=0)
    assert torch.allclose(l2, native, atol=1e-6, rtol=0)
    assert not torch.allclose(l2, _params(_train("l2", sgd, "exclude_bias_norm")), atol=1e-6, rtol=0)


def test_l2_and_decoupled_differ_under_adam():
    adam = lambda groups: torch.optim.Adam(groups, lr=LR)
    l2, decoupled = (_params(_train(m, adam, "all")) for m in ("l2", "decoupled"))
    assert not torch.allclose(l2, decoupled, atol=1e-4, rtol=0)


def test_decoupled_mode_with_adam_is_adamw():
    adam = lambda groups: torch.optim.Adam(groups, lr=LR)
    adamw = lambda groups: torch.optim.AdamW(groups, lr=LR)
    ours = _params(_train("decoupled", adam, "all"))
    native = _params(_train("optimizer", adamw, "all"))
    assert torch.allclose(ours, native, atol=1e-6, rtol=0)


def test_decoupled_weight_decay_ignores_other_modes():
    w = nn.Parameter(torch.tensor([2.0]))
    w.grad = torch.zeros(1)
    for mode in ("optimizer", "l2"):
        decoupled_weight_decay_([{"params": [w], "lr": LR, "decay_rate": WD, "decay_to": 0.0, "decay_mode": mode}])
    assert torch.equal(w.detach(), torch.tensor([2.0]))
    decoupled_weight_decay_([{"params": [w], "lr": LR, "decay_rate": WD, "decay_to": 0.0, "decay_mode": "decoupled"}])
    assert torch.allclose(w.detach(), torch.tensor([2.0 * (1 - LR * WD)]))


def test_unknown_rule_or_mode_is_an_error():
    with pytest.raises(ValueError, match="exclude_bias_norm"):
        create_param_groups(net(), WD, "no_bias")
    with pytest.raises(ValueError, match="decoupled"):
        create_param_groups(net(), WD, "all", mode="coupled")
