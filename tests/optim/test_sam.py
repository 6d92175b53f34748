import copy
import io

import pytest
import torch
from torch import nn

from ablab.optim.sam import SAM, bn_running_stats_frozen, sam_perturbation

RHO, LR, ETA = 0.3, 0.1, 0.01


def spd_matrix(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5], dtype=torch.float64)[:n]) @ q.T


class Quadratic(nn.Module):
    """L(w) = ½ wᵀ A w, returned by forward (the input is ignored)."""

    def __init__(self, a: torch.Tensor, w: torch.Tensor):
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(w.clone())

    def forward(self, x=None):
        return 0.5 * self.w @ self.a @ self.w


def start_point() -> torch.Tensor:
    return torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)


def sam_step(model: nn.Module, sam: SAM) -> None:
    sam.zero_grad()
    model().backward()
    sam.first_step()
    model().backward()
    sam.second_step()


def test_sam_step_with_sgd_matches_closed_form():
    a, w = spd_matrix(), start_point()
    model = Quadratic(a, w)
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=LR), rho=RHO)
    sam_step(model, sam)
    g = a @ w
    expected = w - LR * a @ (w + RHO * g / g.norm())
    assert torch.allclose(model.w.detach(), expected, atol=1e-6, rtol=0)


def test_asam_step_matches_closed_form():
    a, w = spd_matrix(), start_point()
    model = Quadratic(a, w)
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=LR), rho=RHO, adaptive=True, eta=ETA)
    sam_step(model, sam)
    t, g = w.abs() + ETA, a @ w
    e = RHO * t * t * g / (t * g).norm()
    assert torch.allclose(model.w.detach(), w - LR * a @ (w + e), atol=1e-6, rtol=0)
    plain = w - LR * a @ (w + RHO * g / g.norm())
    assert not torch.allclose(model.w.detach(), plain, atol=1e-6, rtol=0)


def test_perturbation_has_radius_rho_in_the_t_norm():
    a, w = spd_matrix(), start_point()
    (e,) = sam_perturbation([w], [a @ w], RHO, adaptive=True, eta=ETA)
    assert torch.allclose((e / (w.abs() + ETA)).norm(), torch.tensor(RHO, dtype=torch.float64))


@pytest.mark.parametrize("base", ["momentum", "adam"])
def test_base_optimizer_receives_the_perturbed_point_gradient(base):
    a, w = spd_matrix(), start_point()
    make = {
        "momentum": lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9, weight_decay=1e-2),
        "adam": lambda ps: torch.optim.Adam(ps, lr=LR),
    }[base]
    model = Quadratic(a, w)
    sam = SAM(model.parameters(), make(model.parameters()), rho=RHO)
    twin = nn.Parameter(w.clone())  # the base optimizer alone, fed the gradient at w + e by hand
    reference = make([twin])
    for _ in range(3):
        sam_step(model, sam)
        with torch.no_grad():
            g = a @ twin
            twin.grad = a @ (twin + RHO * g / g.norm())
        reference.step()
    assert torch.allclose(model.w.detach(), twin.detach(), atol=1e-6, rtol=0)


def test_step_with_closure_equals_the_two_explicit_steps():
    a, w = spd_matrix(), start_point()
    m1, m2 = Quadratic(a, w), Quadratic(a, w)
    s1 = SAM(m1.parameters(), torch.optim.SGD(m1.parameters(), lr=LR, momentum=0.9), rho=RHO)
    s2 = SAM(m2.parameters(), torch.optim.SGD(m2.parameters(), lr=LR, momentum=0.9), rho=RHO)

    def closure():
        loss = m1()
        loss.backward()
        return loss

    for _ in range(3):
        loss = s1.step(closure)
        assert torch.equal(loss.detach(), m2().detach())  # the clean loss is returned
        sam_step(m2, s2)
    assert torch.equal(m1.w, m2.w)


def test_unperturb_restores_bitwise_and_grads_are_cleared():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1))
    before = copy.deepcopy(model.state_dict())
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=LR), rho=0.5)
    model(torch.randn(8, 5)).pow(2).mean().backward()
    sam.first_step()
    assert all(p.grad is None for p in model.parameters())
    assert not all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    sam.unperturb()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_params_without_grad_are_not_perturbed_nor_stepped():
    used, unused = nn.Parameter(torch.tensor([1.0, 2.0])), nn.Parameter(torch.tensor([3.0]))
    sam = SAM([used, unused], torch.optim.SGD([used, unused], lr=LR), rho=RHO)
    (used**2).sum().backward()
    sam.first_step()
    assert torch.equal(unused.detach(), torch.tensor([3.0]))
    (used**2).sum().backward()
    sam.second_step()
    assert torch.equal(unused.detach(), torch.tensor([3.0]))
    assert not torch.equal(used.detach(), torch.tensor([1.0, 2.0]))


def test_zero_gradient_gives_no_perturbation():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    sam = SAM([w], torch.optim.SGD([w], lr=LR), rho=RHO)
    w.grad = torch.zeros(2)
    sam.first_step()
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))


def test_misuse_is_an_error():
    w = nn.Parameter(torch.ones(2))
    other = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="base optimizer"):
        SAM([w, other], torch.optim.SGD([w], lr=LR))
    with pytest.raises(ValueError, match="rho"):
        SAM([w], torch.optim.SGD([w], lr=LR), rho=-1.0)
    sam = SAM([w], torch.optim.SGD([w], lr=LR))
    with pytest.raises(RuntimeError, match="first_step"):
        sam.second_step()
    w.grad = torch.ones(2)
    sam.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        sam.first_step()


def test_lr_set_on_sam_groups_acts_on_the_base_optimizer():
    a, w = spd_matrix(), start_point()
    model = Quadratic(a, w)
    base = torch.optim.SGD(model.parameters(), lr=LR)
    sam = SAM(model.parameters(), base, rho=0.0)
    assert sam.param_groups is base.param_groups
    for group in sam.param_groups:
        group["lr"] = 0.01
    assert base.param_groups[0]["lr"] == 0.01
    sam_step(model, sam)  # rho = 0: a plain SGD step with the new lr
    assert torch.allclose(model.w.detach(), w - 0.01 * a @ w, atol=1e-12, rtol=0)


def test_groups_added_later_are_shared_and_get_sam_defaults():
    w, extra = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    base = torch.optim.SGD([w], lr=LR)
    sam = SAM([w], base, rho=0.2)
    sam.add_param_group({"params": [extra]})
    assert len(base.param_groups) == 2 and base.param_groups[1]["rho"] == 0.2
    assert base.param_groups[1]["lr"] == LR


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _train(model, sam, batches):
    for x, y in batches:
        def closure():
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        sam.step(closure)


def _batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)) for _ in range(n)]


def test_state_dict_round_trip_continues_identically():
    make_base = lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3)
    model = _mlp(0)
    sam = SAM(model.parameters(), make_base(model.parameters()), rho=0.1, adaptive=True)
    _train(model, sam, _batches(3, 1))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": sam.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    fresh = _mlp(99)  # different init, overwritten by the checkpoint
    fresh.load_state_dict(saved["model"])
    fresh_sam = SAM(fresh.parameters(), make_base(fresh.parameters()), rho=0.05)
    fresh_sam.load_state_dict(saved["opt"])
    assert fresh_sam.param_groups is fresh_sam.base_optimizer.param_groups
    assert fresh_sam.param_groups[0]["rho"] == 0.1 and fresh_sam.param_groups[0]["adaptive"] is True

    more = _batches(2, 2)
    _train(model, sam, more)
    _train(fresh, fresh_sam, more)
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    fresh_sam.param_groups[0]["lr"] = 0.5  # still linked after loading
    assert fresh_sam.base_optimizer.param_groups[0]["lr"] == 0.5


def _bn_sam_step(model, sam, x, y, frozen: bool):
    bn = model[1]
    nn.functional.cross_entropy(model(x), y).backward()
    after_first = bn.running_mean.clone()
    sam.first_step()
    if frozen:
        with bn_running_stats_frozen(model):
            nn.functional.cross_entropy(model(x), y).backward()
    else:
        nn.functional.cross_entropy(model(x), y).backward()
    sam.second_step()
    return after_first


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats_update_once_per_sam_step(momentum):
    model = _mlp(0)
    model[1].momentum = momentum
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    bn = model[1]
    for k, (x, y) in enumerate(_batches(3, 3), start=1):
        before = bn.running_mean.clone()
        after_first = _bn_sam_step(model, sam, x, y, frozen=True)
        assert not torch.equal(after_first, before)  # the clean pass updates the stats
        assert torch.equal(bn.running_mean, after_first)  # the perturbed pass does not
        assert int(bn.num_batches_tracked) == k
        assert bn.momentum == momentum and model.training


def test_running_stats_update_twice_without_the_context():
    model = _mlp(0)
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    x, y = _batches(1, 3)[0]
    after_first = _bn_sam_step(model, sam, x, y, frozen=False)
    assert not torch.equal(model[1].running_mean, after_first)
    assert int(model[1].num_batches_tracked) == 2


@pytest.mark.parametrize("davda54", [False, True])
def test_cumulative_average_counts_clean_passes_only(davda54):
    """momentum=None: running_mean is the plain mean of the clean batches' means (factor 1/k at
    step k). davda54/sam's momentum-0 switch lets num_batches_tracked count both passes, so its
    factor at step k is 1/(2k − 1); ablab restores the counter."""
    model = _mlp(0)
    bn = model[1]
    bn.momentum = None
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5)
    expected = bn.running_mean.clone()
    for k, (x, y) in enumerate(_batches(4, 5), start=1):
        with torch.no_grad():
            batch_mean = model[0](x).mean(0)
        nn.functional.cross_entropy(model(x), y).backward()
        sam.first_step()
        if davda54:
            bn.momentum = 0.0  # disable_running_stats …
            nn.functional.cross_entropy(model(x), y).backward()
            bn.momentum = None  # … enable_running_stats
        else:
            with bn_running_stats_frozen(model):
                nn.functional.cross_entropy(model(x), y).backward()
        sam.second_step()
        factor = 1 / (2 * k - 1) if davda54 else 1 / k
        expected = (1 - factor) * expected + factor * batch_mean
        assert int(bn.num_batches_tracked) == (2 * k if davda54 else k)
        assert torch.allclose(bn.running_mean, expected, atol=1e-6)


def test_frozen_stats_keep_the_train_mode_function():
    model = _mlp(0)
    x, _ = _batches(1, 4)[0]
    state = copy.deepcopy(model.state_dict())
    with bn_running_stats_frozen(model):
        inside = model(x)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    outside = model(x)  # train mode: batch statistics, whatever the running ones are
    assert torch.equal(inside, outside)
    model.eval()
    assert not torch.allclose(model(x), outside)


def test_frozen_stats_survive_a_non_finite_batch():
    model = _mlp(0)
    before = copy.deepcopy(model.state_dict())
    with bn_running_stats_frozen(model):
        model(torch.full((4, 4), float("nan")))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sam_steps_and_frozen_stats_do_not_sync_with_the_host():
    model = _mlp(0).cuda()
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, adaptive=True)
    x, y = (t.cuda() for t in _batches(1, 5)[0])
    nn.functional.cross_entropy(model(x), y).backward()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sam.first_step()
        with bn_running_stats_frozen(model):
            model(x)
        sam.unperturb()
    finally:
        torch.cuda.set_sync_debug_mode("default")
