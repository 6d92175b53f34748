"""The cosine schedule's period reproduces PyTorch's CosineAnnealingLR with T_max shorter than the run."""

import math

import pytest
import torch

from ablab.errors import SpecError
from ablab.optim.schedules import cosine
from ablab.registry import SCHEDULES


def _torch_lrs(base_lr: float, t_max: int, eta_min: float, steps: int) -> list[float]:
    """The lr PyTorch's scheduler sets before each of ``steps`` optimizer steps on a tiny SGD."""
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=base_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        w.sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return lrs


@pytest.mark.parametrize("t_max, eta_min", [(7, 0.0), (10, 0.02), (1, 0.05)])
def test_period_matches_torch_cosine_annealing_over_several_cycles(t_max, eta_min):
    base = 0.2
    steps = 5 * t_max + 3  # down, up, down, … past several T_max
    f = cosine(total_steps=steps, steps_per_epoch=1, final_factor=eta_min / base, t_max_steps=t_max)
    ours = [base * f(s) for s in range(steps)]
    assert ours == pytest.approx(_torch_lrs(base, t_max, eta_min, steps), rel=1e-9, abs=1e-12)


def test_period_in_epochs_and_the_slides_setting():
    # 200 epochs with T_max = 100 epochs: at the minimum after 100 epochs, back to the base lr at 200
    f = cosine(total_steps=2000, steps_per_epoch=10, t_max_epochs=100)
    g = cosine(total_steps=2000, steps_per_epoch=10, t_max_steps=1000)
    assert [f(s) for s in range(0, 2001, 50)] == [g(s) for s in range(0, 2001, 50)]
    assert f(0) == 1.0 and f(500) == pytest.approx(0.5) and f(1000) == pytest.approx(0.0)
    assert f(1500) == pytest.approx(0.5) and f(2000) == pytest.approx(1.0)
    assert f(1999) == pytest.approx(0.5 * (1 + math.cos(math.pi * 1.999)))


def test_no_period_keeps_annealing_over_the_whole_run():
    f = cosine(total_steps=100, steps_per_epoch=10)
    assert f(100) == pytest.approx(0.0) and f(150) == pytest.approx(0.0)  # clamped after the run


def test_period_starts_after_warmup():
    f = cosine(total_steps=100, steps_per_epoch=10, warmup_steps=4, t_max_steps=20)
    assert [f(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4 + 20) == pytest.approx(0.0) and f(4 + 40) == pytest.approx(1.0)


def test_period_given_in_two_units_or_shorter_than_a_step_is_an_error():
    with pytest.raises(SpecError, match="two units"):
        SCHEDULES.validate({"name": "cosine", "t_max_steps": 10, "t_max_epochs": 1})
    with pytest.raises(SpecError, match="less than one step"):
        cosine(total_steps=100, steps_per_epoch=10, t_max_epochs=0.01)


def test_piecewise_is_the_seed_002_cifar_schedule_at_every_boundary():
    """L451: lr .01 for 400 steps (steps 0..399), then .1, ÷10 at 32k, 48k and 70k steps."""
    f = SCHEDULES.create({"name": "piecewise", "boundaries_steps": [400, 32000, 48000, 70000],
                          "factors": [0.1, 1, 0.1, 0.01, 0.001]}, total_steps=87_975, steps_per_epoch=391)
    want = {0: 0.01, 399: 0.01, 400: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01, 48_000: 0.001,
            69_999: 0.001, 70_000: 0.0001, 87_974: 0.0001}
    assert {s: 0.1 * f(s) for s in want} == pytest.approx(want, rel=1e-12)


def test_piecewise_in_epochs_rounds_to_steps():
    f = SCHEDULES.create({"name": "piecewise", "boundaries_epochs": [1.5], "factors": [1, 0.5]},
                         total_steps=100, steps_per_epoch=10)
    assert [f(s) for s in (14, 15)] == [1, 0.5]


@pytest.mark.parametrize("params, field", [
    ({"factors": [1, 0.1]}, "boundaries_steps"),                                        # no boundaries
    ({"factors": [1, 0.1], "boundaries_steps": [5], "boundaries_epochs": [1]}, "boundaries_epochs"),  # both
    ({"factors": [1, 0.1], "boundaries_steps": [5, 5]}, "boundaries_steps"),           # not increasing
    ({"factors": [1], "boundaries_steps": [5]}, "factors"),                             # one factor short
])
def test_piecewise_bad_settings_name_their_field(params, field):
    with pytest.raises(SpecError) as err:
        SCHEDULES.create({"name": "piecewise", **params}, total_steps=10, steps_per_epoch=1)
    assert err.value.field == field
