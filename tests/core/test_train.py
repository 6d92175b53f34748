import math

import pytest
import torch

from ablab.optim.schedules import constant, cosine, step_decay
from ablab.registry import LOSSES
from ablab.spec import RunSpec
from ablab.train.loop import l2_weights, plan_duration, resolve_device, train, train_step
from conftest import TINY_BASE


def spec(**changes) -> RunSpec:
    return RunSpec.model_validate({**TINY_BASE, **changes})


def _rows(result, split, name):
    return [(s, e, v) for (s, e, sp, n, v) in result.metrics if sp == split and n == name]


def test_cosine_schedule_known_values():
    f = cosine(total_steps=100, steps_per_epoch=10)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    g = cosine(total_steps=110, steps_per_epoch=10, warmup_epochs=1, final_factor=0.1)
    assert [g(i) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert g(110) == pytest.approx(0.1)


def test_step_schedule_with_warmup():
    f = step_decay(total_steps=100, steps_per_epoch=10, milestones_epochs=[3, 6], gamma=0.5, warmup_steps=4)
    assert [f(i) for i in (0, 3, 29, 30, 59, 60, 99)] == pytest.approx([0.25, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    assert constant(total_steps=10, steps_per_epoch=5, warmup_steps=2)(0) == 0.5


def test_soft_label_cross_entropy_equals_hard_for_one_hot():
    ce = LOSSES.create("cross_entropy")
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    assert torch.allclose(ce(logits, y), ce(logits, torch.nn.functional.one_hot(y, 4).float()))


def test_mse_on_class_labels_uses_one_hot():
    mse = LOSSES.create("mse")
    out = torch.zeros(2, 3)
    assert mse(out, torch.tensor([0, 2])).item() == pytest.approx(2 / 6)


def test_coupled_l2_adds_l2_times_weight_to_the_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    loss_fn = LOSSES.create("cross_entropy")
    w0 = model[0].weight.detach().clone()
    b0 = model[0].bias.detach().clone()

    def grads(l2):
        m = torch.nn.Sequential(torch.nn.Linear(3, 2))
        m.load_state_dict({"0.weight": w0, "0.bias": b0})
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        train_step(m, opt, loss_fn, x, y, l2_weights(m), l2)
        return w0 - m[0].weight.detach(), b0 - m[0].bias.detach()  # = lr · grad

    (gw0, gb0), (gw1, gb1) = grads(0.0), grads(0.1)
    assert torch.allclose(gw1 - gw0, 0.1 * w0, atol=1e-6)  # d/dw 0.5·λ‖w‖² = λw
    assert torch.equal(gb1, gb0)  # biases carry no penalty


def test_durations_are_converted_to_steps_once():
    assert plan_duration(spec(epochs=3, batch_size=100), 1257).total_steps == 3 * 13
    p = plan_duration(spec(epochs=None, steps=20, batch_size=100), 1257)
    assert (p.total_steps, p.epochs) == (20, 2)
    assert plan_duration(spec(drop_last=True, batch_size=100), 1257).steps_per_epoch == 12


def test_run_records_every_epoch_and_every_k_steps():
    result = train(spec(epochs=2, batch_size=128, record={"every_steps": 5}))
    assert result.status == "done", result.error
    for split in ("train", "val", "test"):
        assert [e for (_, e, _) in _rows(result, split, "accuracy")] == [0, 1, 2]
    steps = [s for (s, _, _) in _rows(result, "batch", "loss")]
    assert steps == [5, 10, 15, 20]  # 10 steps per epoch, 20 in all
    assert all(0 <= v <= 1 for (_, _, v) in _rows(result, "test", "accuracy"))
    final = _rows(result, "test", "accuracy")[-1][2]
    assert final > 0.5  # two epochs of SGD learn digits well above chance (0.1)


def test_steps_duration_stops_mid_epoch_and_evaluates():
    result = train(spec(epochs=None, steps=13, batch_size=128))
    assert result.status == "done"
    assert _rows(result, "test", "loss")[-1][:2] == (13, 2)


def test_divergence_ends_the_run_with_its_history():
    result = train(spec(model="linear", loss="mse", optimizer={"name": "sgd", "lr": 10.0}, epochs=5, record={"every_steps": 1}))
    assert result.status == "diverged" and result.error is None
    losses = _rows(result, "batch", "loss")
    assert not math.isfinite(losses[-1][2])
    assert len(losses) < 50  # ended early, not filled up to 5 epochs
    assert _rows(result, "test", "loss")[0][1] == 0  # the history before divergence is kept


def test_a_run_that_raises_is_failed_with_traceback(monkeypatch):
    import ablab.train.loop as loop

    def boom(*a, **k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(loop, "train_step", boom)
    result = train(spec())
    assert result.status == "failed" and "RuntimeError: out of memory (simulated)" in result.error
    assert "Traceback" in result.error


def test_device_auto_picks_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_regression_records_mse():
    from ablab.data.base import Dataset, Split
    from ablab.registry import DATASETS

    if "toy_regression" not in DATASETS:
        @DATASETS.register("toy_regression")
        def toy_regression() -> Dataset:
            """y = 2x on 64 points."""
            g = torch.Generator().manual_seed(0)
            x = torch.randn(64, 1, generator=g)
            s = Split(x, 2 * x)
            return Dataset("toy", {"train": s, "val": s, "test": s}, (1,), 1, "regression")

    r = train(spec(data="toy_regression", model="linear", loss="mse", epochs=30, batch_size=16,
                   optimizer={"name": "sgd", "lr": 0.1}))
    assert r.status == "done", r.error
    assert _rows(r, "test", "mse")[-1][2] < 1e-3
    assert not _rows(r, "test", "accuracy")


def test_normalize_is_applied_at_evaluation_too():
    from ablab.data.base import Split
    from ablab.registry import AUGMENTATIONS, LOSSES
    from ablab.train.loop import evaluate, load_dataset

    data = load_dataset({"name": "digits"})
    norm = AUGMENTATIONS.create("normalize", dataset=data)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    ce = LOSSES.create("cross_entropy")
    test = data.splits["test"]
    pre = Split(norm(test.x, test.y, None)[0], test.y)
    assert evaluate(model, test, ce, True, 100, (norm,)) == evaluate(model, pre, ce, True, 100)
    assert evaluate(model, test, ce, True, 100, (norm,)) != evaluate(model, test, ce, True, 100)
