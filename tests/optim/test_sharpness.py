import copy

import pytest
import torch
from torch import nn

from ablab.optim.sharpness import hessian_top_eigenvalue, sam_sharpness

RHO, ETA = 0.3, 0.01


def spd_matrix(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5], dtype=torch.float64)) @ q.T


class Quadratic(nn.Module):
    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))

    def forward(self, x):
        return 0.5 * self.w @ self.a @ self.w


def identity_loss(out, y):
    return out


ONE_BATCH = [(torch.zeros(1), torch.zeros(1))]


def quadratic(w, a):
    return 0.5 * w @ a @ w


def test_sam_sharpness_matches_the_closed_form_on_a_quadratic():
    a = spd_matrix()
    model = Quadratic(a)
    w = model.w.detach().clone()
    g = a @ w
    e = RHO * g / g.norm()
    expected = quadratic(w + e, a) - quadratic(w, a)
    assert sam_sharpness(model, identity_loss, ONE_BATCH, RHO) == pytest.approx(expected.item(), rel=1e-9)


def test_adaptive_sam_sharpness_matches_the_closed_form():
    a = spd_matrix()
    model = Quadratic(a)
    w = model.w.detach().clone()
    t, g = w.abs() + ETA, a @ w
    e = RHO * t * t * g / (t * g).norm()
    expected = quadratic(w + e, a) - quadratic(w, a)
    got = sam_sharpness(model, identity_loss, ONE_BATCH, RHO, adaptive=True, eta=ETA)
    assert got == pytest.approx(expected.item(), rel=1e-9)


def _regression_batches(n_batches: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(20, 5, generator=g, dtype=torch.float64),
             torch.randn(20, 1, generator=g, dtype=torch.float64)) for _ in range(n_batches)]


def half_mse(out, y):
    return 0.5 * (out - y).pow(2).mean()


def test_sam_sharpness_is_the_mean_over_batches():
    torch.manual_seed(0)
    model = nn.Linear(5, 1).double()
    batches = _regression_batches()
    each = [sam_sharpness(model, half_mse, [b], RHO) for b in batches]
    assert sam_sharpness(model, half_mse, batches, RHO) == pytest.approx(sum(each) / len(each), rel=1e-12)
    assert all(v > 0 for v in each)  # a convex loss rises along the gradient


def test_hessian_top_eigenvalue_of_a_quadratic():
    model = Quadratic(spd_matrix())
    got = hessian_top_eigenvalue(model, identity_loss, ONE_BATCH, generator=torch.Generator().manual_seed(3))
    assert got == pytest.approx(5.0, rel=1e-3)


def test_hessian_top_eigenvalue_of_linear_regression_over_batches():
    torch.manual_seed(0)
    model = nn.Linear(5, 1).double()
    batches = _regression_batches()
    # H of mean_b ½·mean((Xw + b − y)²) over [w, b] is mean_b X̃ᵀX̃ / n with X̃ = [X 1]
    h = sum(torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1).T
            @ torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) / len(x) for x, _ in batches) / len(batches)
    expected = torch.linalg.eigvalsh(h).max().item()
    got = hessian_top_eigenvalue(model, half_mse, batches, iters=200, tol=1e-10,
                                 generator=torch.Generator().manual_seed(0))
    assert got == pytest.approx(expected, rel=1e-3)


def test_same_generator_seed_gives_the_same_value():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    batches = _regression_batches()
    run = lambda seed: hessian_top_eigenvalue(model, half_mse, batches, iters=5, tol=0.0,
                                              generator=torch.Generator().manual_seed(seed))
    assert run(7) == run(7)
    assert run(7) != run(8)  # five iterations have not converged: the start matters


def test_both_leave_the_model_bitwise_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 1)).double()
    model.train()
    model[1].eval()  # a module frozen on purpose keeps its own flag
    model(torch.randn(8, 5, dtype=torch.float64)).sum().backward()
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    flags = [m.training for m in model.modules()]
    batches = _regression_batches()
    sam_sharpness(model, half_mse, batches, RHO)
    sam_sharpness(model, half_mse, batches, RHO, adaptive=True)
    hessian_top_eigenvalue(model, half_mse, batches, iters=3)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert [m.training for m in model.modules()] == flags


def test_no_batches_is_an_error():
    with pytest.raises(ValueError, match="batch"):
        sam_sharpness(Quadratic(spd_matrix()), identity_loss, [], RHO)
    with pytest.raises(ValueError, match="batch"):
        hessian_top_eigenvalue(Quadratic(spd_matrix()), identity_loss, [])
