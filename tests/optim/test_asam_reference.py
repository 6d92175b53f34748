"""ASAM against the official algorithm (SamsungLabs/ASAM): T = |w| + η on parameters named "weight" only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ablab.optim.sam import SAM, asam_unscaled_params

RHO, ETA, LR, STEPS = 0.5, 0.01, 0.05, 20


def small_model(seed: int = 0) -> nn.Module:
    """conv (weight, bias) + BatchNorm (γ = weight, β = bias) + linear (weight, bias), float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)
    ).double()


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
            for _ in range(n)]


class OfficialASAM:
    """The official ascent/descent steps, written out (not ablab code).

    Ascent: T = |w| + η where the parameter's name contains "weight", else 1; one norm
    ‖T g‖ over all parameters (+1e-16); e = ρ T² g / ‖T g‖; w ← w + e. Descent: w ← w − e, then
    the base optimizer's step. ``scale_all``: T = |w| + η on every parameter.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scale_all: bool = False):
        self.model, self.optimizer, self.scale_all = model, optimizer, scale_all
        self.eps: dict[nn.Parameter, torch.Tensor] = {}

    @torch.no_grad()
    def ascent_step(self) -> None:
        named = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
        scales = {p: (p.abs() + ETA) if (self.scale_all or "weight" in n) else torch.ones_like(p) for n, p in named}
        norm = torch.stack([(scales[p] * p.grad).norm() for _, p in named]).norm() + 1e-16
        for _, p in named:
            self.eps[p] = scales[p] * scales[p] * p.grad * (RHO / norm)
            p.add_(self.eps[p])
        self.optimizer.zero_grad()

    @torch.no_grad()
    def descent_step(self) -> None:
        for p, e in self.eps.items():
            p.sub_(e)
        self.optimizer.step()
        self.optimizer.zero_grad()


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)


def train_official(scale_all: bool = False) -> nn.Module:
    model = small_model()
    asam = OfficialASAM(model, sgd(model), scale_all)
    for x, y in batches(STEPS):
        nn.functional.cross_entropy(model(x), y).backward()
        asam.ascent_step()
        nn.functional.cross_entropy(model(x), y).backward()
        asam.descent_step()
    return model


def train_ablab(adaptive_params: str | None) -> nn.Module:
    """ablab's SAM, adaptive, with the official unscaled set ("weights"), none ("all"), or no argument."""
    model = small_model()
    unscaled = {} if adaptive_params is None else {"unscaled": asam_unscaled_params(model, adaptive_params)}
    sam = SAM(model.parameters(), sgd(model), rho=RHO, adaptive=True, eta=ETA, **unscaled)
    for x, y in batches(STEPS):
        sam.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        sam.first_step()
        nn.functional.cross_entropy(model(x), y).backward()
        sam.second_step()
    return model


def max_gap(a: nn.Module, b: nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def test_weights_reproduces_the_official_asam_over_20_steps():
    official = train_official()
    assert max_gap(train_ablab("weights"), official) < 1e-10  # float64; the official ε is 1e-16, ours 1e-12
    # scaling every parameter is a different algorithm, visibly so after 20 steps
    assert max_gap(train_ablab("all"), official) > 1e-3


def test_all_reproduces_scaling_every_parameter():
    every = train_ablab("all")
    assert max_gap(every, train_official(scale_all=True)) < 1e-10
    assert all(torch.equal(p, q) for p, q in zip(every.parameters(), train_ablab(None).parameters()))


def test_unscaled_parameters_take_the_plain_direction_inside_one_global_norm():
    model = small_model()
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    sam = SAM(model.parameters(), sgd(model), rho=RHO, adaptive=True, eta=ETA,
              unscaled=asam_unscaled_params(model, "weights"))
    sam.first_step()
    t = {n: (clean[n].abs() + ETA) if "weight" in n else torch.ones_like(clean[n]) for n in clean}
    norm = torch.sqrt(sum(((t[n] * grads[n]) ** 2).sum() for n in clean))
    for n, p in model.named_parameters():
        assert torch.allclose(p - clean[n], RHO * t[n] ** 2 * grads[n] / norm, atol=1e-12, rtol=0), n


def test_unscaled_set_is_biases_and_norm_beta():
    model = small_model()
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in asam_unscaled_params(model, "weights")] == ["0.bias", "1.bias", "4.bias"]
    assert asam_unscaled_params(model, "all") == []
    with pytest.raises(ValueError, match="'weights' or 'all'"):
        asam_unscaled_params(model, "biases")  # type: ignore[arg-type]


def test_unscaled_parameters_must_be_the_optimizers():
    model, other = small_model(), small_model(1)
    with pytest.raises(ValueError, match="unscaled parameters must be among its params"):
        SAM(model.parameters(), sgd(model), adaptive=True, unscaled=list(other.parameters())[:1])
