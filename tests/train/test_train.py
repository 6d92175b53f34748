import math

import pytest
import torch

from ablab.optim.schedules import constant, cosine, step_decay
from ablab.registry import LOSSES
from ablab.spec import RunSpec
from ablab.train.build import plan_duration
from ablab.train.compute import resolve_device
from ablab.train.loop import train
from ablab.train.objectives import StandardStep, StepSetup
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


def _one_step(spec: RunSpec, model):
    from ablab.train.build import build_optimizer

    opt = build_optimizer(spec, model)
    x, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1, 0])
    setup = StepSetup(model, opt.optimizer, LOSSES.create("cross_entropy"), opt.penalty, opt.decouple)
    StandardStep(setup).step(model, model, opt.optimizer, x, y)


def _tiny_model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 2))


def test_l2_mode_adds_lambda_times_weight_to_the_gradient_of_weights_only():
    w0 = _tiny_model()[0].weight.detach().clone()
    updates = {}
    for value in (0.0, 0.1):
        m = _tiny_model()
        _one_step(spec(optimizer={"name": "sgd", "lr": 1.0}, weight_decay={"value": value, "mode": "l2"}), m)
        updates[value] = (w0 - m[0].weight.detach(), m[0].bias.detach().clone())
    assert torch.allclose(updates[0.1][0] - updates[0.0][0], 0.1 * w0, atol=1e-6)  # d/dw ½λ‖w‖² = λw
    assert torch.equal(updates[0.1][1], updates[0.0][1])  # biases carry no penalty (exclude_bias_norm)


def test_l2_and_decoupled_agree_for_plain_sgd_and_differ_for_adam():
    def final(opt, mode):
        m = _tiny_model()
        _one_step(spec(optimizer=opt, weight_decay={"value": 0.1, "mode": mode}), m)
        _one_step(spec(optimizer=opt, weight_decay={"value": 0.1, "mode": mode}), m)
        return m[0].weight.detach()

    sgd, adam = {"name": "sgd", "lr": 0.5}, {"name": "adam", "lr": 0.5}
    assert torch.allclose(final(sgd, "l2"), final(sgd, "decoupled"), atol=1e-6)
    assert not torch.allclose(final(adam, "l2"), final(adam, "decoupled"), atol=1e-3)


def test_weight_decay_given_twice_is_an_error():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="weight decay given twice"):
        spec(optimizer={"name": "sgd", "lr": 0.1, "weight_decay": 0.1}, weight_decay={"value": 0.1})


def test_budget_epochs_halves_the_steps_of_a_sam_run():
    plain = plan_duration(spec(epochs=None, budget_epochs=4, batch_size=100), 1257)
    sam = plan_duration(spec(epochs=None, budget_epochs=4, batch_size=100, objective={"name": "sam", "rho": 0.05}), 1257)
    assert plain.total_steps == 4 * 13 and sam.total_steps == 2 * 13
    assert plain.info()["gradient_evaluations"] == sam.info()["gradient_evaluations"] == 52


def test_sam_run_records_clean_loss_and_sharpness():
    r = train(spec(objective={"name": "sam", "rho": 0.05}, epochs=2, record={"every_steps": 5, "evaluators": [
        "standard", {"name": "sharpness", "rho": 0.05, "batches": 2, "hessian_iters": 5}]}))
    assert r.status == "done", r.error
    names = {n for (_, _, sp, n, _) in r.metrics if sp == "train"}
    assert {"sam_sharpness", "hessian_top_eigenvalue"} <= names
    assert r.info["gradient_evaluations"] == 2 * r.info["steps"]
    final = _rows(r, "test", "accuracy")[-1][2]
    assert final > 0.3


def test_sam_updates_batchnorm_running_stats_once_per_step():
    from ablab.train.build import build_run

    s = spec(model={"name": "mlp", "widths": [8], "norm": "batchnorm"}, objective={"name": "sam", "rho": 0.05})
    run = build_run(s)
    x, y = run.data.splits["train"].x[:32], run.data.splits["train"].y[:32]
    run.objective.step(run.model, run.forward, run.optimizer, x, y)
    assert int(run.model.norm0.num_batches_tracked) == 1


def test_random_labels_are_fixed_per_seed_and_keep_test_labels():
    from ablab.train.build import load_run_data

    clean = load_run_data(spec())
    a = load_run_data(spec(corrupt={"label_fraction": 1.0, "seed": 3}))
    b = load_run_data(spec(corrupt={"label_fraction": 1.0, "seed": 3}))
    assert torch.equal(a.splits["train"].y, b.splits["train"].y)
    agree = (a.splits["train"].y == clean.splits["train"].y).float().mean().item()
    assert 0.02 < agree < 0.25  # random labels agree with the truth about 1/10 of the time
    assert torch.equal(a.splits["test"].y, clean.splits["test"].y)
    half = load_run_data(spec(corrupt={"label_fraction": 0.5, "seed": 3}))
    assert 0.45 < (half.splits["train"].y != clean.splits["train"].y).float().mean().item() < 0.5


def test_shuffled_pixels_are_one_permutation_for_all_splits():
    from ablab.train.build import load_run_data

    clean = load_run_data(spec())
    shuffled = load_run_data(spec(corrupt={"shuffle_pixels": True, "seed": 1}))
    cx, sx = clean.splits["test"].x.flatten(1), shuffled.splits["test"].x.flatten(1)
    assert not torch.equal(cx, sx)
    assert torch.equal(cx.sort(dim=1).values, sx.sort(dim=1).values)  # same pixels, moved
    tx = shuffled.splits["train"].x.flatten(1)
    # the same permutation: a pixel column of the clean data reappears as the same column in every split
    col = int((clean.splits["train"].x.flatten(1).std(0) > 0).nonzero()[0])
    j = int(((tx - clean.splits["train"].x.flatten(1)[:, col : col + 1]).abs().sum(0) == 0).nonzero()[0])
    assert torch.equal(sx[:, j], cx[:, col])


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
    from ablab.train import objectives

    def boom(*a, **k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(objectives.StandardStep, "step", boom)
    result = train(spec())
    assert result.status == "failed" and "RuntimeError: out of memory (simulated)" in result.error
    assert "Traceback" in result.error


def test_device_auto_picks_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_regression_records_mse(own_code_sandbox):
    """(The sandbox removes the dataset afterwards: a component left registered changes what other tests see,
    e.g. the known-datasets list in docs/errors.md.)"""
    from ablab.data.base import Dataset, Split
    from ablab.registry import DATASETS

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
    from ablab.train.evaluators import loss_and_score
    from ablab.train.build import load_dataset

    data = load_dataset({"name": "digits"})
    norm = AUGMENTATIONS.create("normalize", dataset=data)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    ce = LOSSES.create("cross_entropy")
    test = data.splits["test"]
    pre = Split(norm(test.x, test.y, None)[0], test.y)
    assert loss_and_score(model, model, test, ce, True, 100, (norm,)) == loss_and_score(model, model, pre, ce, True, 100)
    assert loss_and_score(model, model, test, ce, True, 100, (norm,)) != loss_and_score(model, model, test, ce, True, 100)


CUDA = pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])


def _mixed_norm_model() -> torch.nn.Sequential:
    """Conv → BatchNorm → ReLU → conv → GroupNorm → ReLU → linear → LayerNorm, on 3×8×8 input."""
    from ablab.norm.batchnorm import AblatedBatchNorm2d

    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), AblatedBatchNorm2d(8, momentum=0.5), nn.ReLU(),
        nn.Conv2d(8, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Flatten(), nn.Linear(128, 10), nn.LayerNorm(10),
    )


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_bf16_norm_layers_compute_in_fp32_and_the_model_is_left_as_built(device):
    """Under bf16 each norm layer gets the bf16 output of a conv/linear and computes in float32:
    its output is the float32 computation on that input, rounded to the output's dtype, and
    BatchNorm's running statistics are float32's (a bf16 computation misses by ~1e-3)."""
    import copy

    from ablab.spec import Compute
    from ablab.train.compute import make_forward

    model = _mixed_norm_model().to(device).train()
    seen = {}

    def before(m, args):
        seen[m] = {"input": args[0], "fp32_twin": copy.deepcopy(m)}

    def after(m, args, out):
        seen[m]["output"] = out

    norms = [model[1], model[4], model[8]]
    for m in norms:
        m.register_forward_pre_hook(before)
        m.register_forward_hook(after)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    out = make_forward(model, Compute(precision="bf16"), torch.device(device))(x)

    assert out.dtype == torch.float32
    assert not any("forward" in vars(m) for m in model.modules())  # no forward replaced at run time
    for m in norms:
        got, twin = seen[m]["output"], seen[m]["fp32_twin"]
        assert seen[m]["input"].dtype == torch.bfloat16
        with torch.autocast(device, enabled=False):
            ref = twin(seen[m]["input"].float())
        if device == "cpu":
            assert torch.equal(got, ref.to(got.dtype)), type(m).__name__
        else:  # cuDNN's kernels need not round like the reference: one bf16 step
            torch.testing.assert_close(got.float(), ref, rtol=2**-7, atol=1e-5)
        assert all(p.dtype == torch.float32 for p in m.parameters())
    bn, twin = model[1], seen[model[1]]["fp32_twin"]
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float32
    torch.testing.assert_close(bn.running_mean, twin.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, twin.running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_bf16_and_channels_last_runs_train_and_learn(device):
    # 3C3D with BatchNorm learns digits in one epoch (fp32: 0.94-0.96 test accuracy; chance 0.1)
    r = train(spec(model={"name": "3c3d", "norm": "batchnorm"}, data={"name": "digits", "size": 16, "channels": 1},
                   epochs=1, batch_size=32, optimizer={"name": "sgd", "lr": 0.02, "momentum": 0.9}, device=device,
                   compute={"precision": "bf16", "channels_last": True}))
    assert r.status == "done", r.error
    assert r.device.startswith(device)
    assert _rows(r, "test", "accuracy")[-1][2] > 0.8


@pytest.mark.slow
def test_compiled_model_gives_the_same_numbers_as_eager_within_tolerance():
    base = dict(epochs=1, record={"every_steps": 5, "eval_splits": ["test"]})
    eager = train(spec(**base))
    compiled = train(spec(**base, compute={"compile": True}))
    assert compiled.status == "done", compiled.error
    a = [v for (_, _, sp, n, v) in eager.metrics if sp == "test"]
    b = [v for (_, _, sp, n, v) in compiled.metrics if sp == "test"]
    assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    # a later run of the same architecture in this process reuses the compiled code: no new frames
    from torch._dynamo.utils import counters

    frames = sum(counters["frames"].values())
    again = train(spec(**base, compute={"compile": True}, seeds={"init": 7, "shuffle": 7}))
    assert again.status == "done" and again.metrics != compiled.metrics
    assert sum(counters["frames"].values()) == frames, dict(counters["frames"])


def _steps_spec(steps: int, device: str) -> RunSpec:
    """``steps`` steps inside one epoch, no evaluation: a duration in steps, so no ``epochs``."""
    base = {k: v for k, v in TINY_BASE.items() if k != "epochs"}
    return RunSpec.model_validate({
        **base, "data": {"name": "synthetic", "n_samples": 20_000, "n_features": 16, "n_classes": 4},
        "steps": steps, "batch_size": 32, "device": device, "deterministic": False,
        "record": {"every_steps": 10**6, "eval_splits": []}, "augment": [],
    })


def test_the_sync_test_spec_is_valid_and_trains_the_steps_it_names():
    # the CUDA test below once failed validation (epochs and steps both given) and measured nothing
    r = train(_steps_spec(7, "cpu"))
    assert r.status == "done", r.error
    assert [s for (s, _, sp, n, _) in r.metrics if sp == "batch" and n == "loss"] == [7]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_steps_do_not_synchronise_with_the_host():
    """Host syncs on CUDA (flagged by torch's sync debug mode) come from set-up and recording, not
    from steps: 150 more steps inside the same epoch add none."""
    import warnings

    def syncs(steps: int) -> int:
        s = _steps_spec(steps, "cuda")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = train(s)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert result.status == "done", result.error
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(5)  # warm-up: first-use work of the CUDA context
    assert syncs(200) <= syncs(50)
