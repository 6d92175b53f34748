"""Label smoothing in seed 002's convention (ch. 3, Eq. 3.8; check C3-1), beside PyTorch's."""

import pytest
import torch
import torch.nn.functional as F

from ablab.losses import smoothed_targets
from ablab.registry import LOSSES
from conftest import run_refused, tiny_study


def test_targets_are_one_minus_s_and_s_over_c_minus_one():
    t = smoothed_targets(torch.tensor([2, 0]), 10, 0.75, torch.float64)
    assert torch.allclose(t[0, 2], torch.tensor(0.25, dtype=torch.float64))
    assert torch.allclose(t[0, [0, 1, 3, 9]], torch.full((4,), 0.75 / 9, dtype=torch.float64))
    assert torch.allclose(t.sum(1), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("c", [2, 3, 10, 100])
def test_the_largest_s_is_uniform(c):
    t = smoothed_targets(torch.arange(c), c, 1 - 1 / c, torch.float64)
    assert torch.allclose(t, torch.full((c, c), 1 / c, dtype=torch.float64))


def test_soft_labels_map_affinely_and_sum_to_one():
    y = torch.tensor([[0.3, 0.7, 0.0], [0.0, 0.0, 1.0]])
    t = smoothed_targets(y, 3, 0.2)
    assert torch.allclose(t, y * (1 - 0.2 - 0.1) + 0.1)
    assert torch.allclose(t.sum(1), torch.ones(2))
    # the map commutes with mixing: smoothing a mix = mixing the smoothed labels
    a, b = torch.tensor([1]), torch.tensor([2])
    mixed = smoothed_targets(0.4 * F.one_hot(a, 3).float() + 0.6 * F.one_hot(b, 3).float(), 3, 0.2)
    assert torch.allclose(mixed, 0.4 * smoothed_targets(a, 3, 0.2) + 0.6 * smoothed_targets(b, 3, 0.2))


def test_the_loss_is_the_cross_entropy_against_those_targets():
    torch.manual_seed(0)
    out, y = torch.randn(5, 10, dtype=torch.float64), torch.tensor([0, 3, 9, 3, 1])
    loss = LOSSES.create({"name": "cross_entropy", "smoothing": 0.75})(out, y)
    logp = out.log_softmax(1)
    direct = -sum((0.25 * logp[i, y[i]] + (0.75 / 9) * (logp[i].sum() - logp[i, y[i]])) for i in range(5)) / 5
    assert torch.allclose(loss, direct)


def test_pytorch_convention_differs_as_the_issue_says():
    """PyTorch's s = 0.75, C = 10 puts 0.325 on the true class and 0.075 elsewhere; the seed's 0.25/0.0833."""
    out, y = torch.zeros(1, 10, dtype=torch.float64), torch.tensor([4])
    out[0, 4] = 1.0
    torch_loss = LOSSES.create({"name": "cross_entropy", "label_smoothing": 0.75})(out, y)
    logp = out.log_softmax(1)[0]
    t = torch.full((10,), 0.075, dtype=torch.float64)
    t[4] = 0.325
    assert torch.allclose(torch_loss, -(t * logp).sum())
    seed_loss = LOSSES.create({"name": "cross_entropy", "smoothing": 0.75})(out, y)
    assert torch.allclose(seed_loss, -(smoothed_targets(y, 10, 0.75, torch.float64)[0] * logp).sum())
    assert not torch.allclose(seed_loss, torch_loss)


def test_zero_smoothing_is_the_plain_loss_bitwise():
    torch.manual_seed(1)
    out, y = torch.randn(7, 4), torch.randint(0, 4, (7,))
    assert torch.equal(LOSSES.create({"name": "cross_entropy", "smoothing": 0.0})(out, y), F.cross_entropy(out, y))


def test_s_above_the_range_is_refused_at_call():
    with pytest.raises(ValueError, match=r"outside \[0, 1 − 1/C\]"):
        LOSSES.create({"name": "cross_entropy", "smoothing": 0.95})(torch.zeros(2, 10), torch.tensor([0, 1]))


@pytest.mark.parametrize("loss, text", [
    ({"name": "cross_entropy", "smoothing": 0.95}, "smoothing 0.95 is outside [0, 1 − 1/C] = [0, 0.9] for C = 10"),
    ({"name": "cross_entropy", "smoothing": -0.1}, "greater than or equal to 0"),
    ({"name": "cross_entropy", "smoothing": 0.1, "label_smoothing": 0.1}, "give one of 'label_smoothing'"),
])
def test_bad_smoothing_exits_2_writing_nothing(loss, text, write_study, tmp_path, capsys):
    study = tiny_study()
    study["base"]["loss"] = loss
    err, path = run_refused(write_study, study, tmp_path, capsys)
    assert f"{path}: base.loss" in err and text in err, err


def test_smoothing_at_its_default_leaves_run_ids_as_they_were():
    """``smoothing`` came later: at 0 it stays out of the canonical form, so stored runs keep their ids."""
    from ablab.spec import RunSpec

    base = tiny_study()["base"]
    plain = RunSpec.model_validate(base)
    zero = RunSpec.model_validate({**base, "loss": {"name": "cross_entropy", "smoothing": 0}})
    smoothed = RunSpec.model_validate({**base, "loss": {"name": "cross_entropy", "smoothing": 0.1}})
    assert plain.id == zero.id != smoothed.id
    assert '"smoothing"' not in plain.canonical_json() and '"smoothing":0.1' in smoothed.canonical_json()
