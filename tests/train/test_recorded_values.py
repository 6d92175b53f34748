"""Every number a run records equals a direct computation on the same model and batches.

Each test trains through the public API (``train(spec)`` or the CLI into a store), replays the
run by hand (``replay.py``: same initial weights, same batches, plain PyTorch) and compares:
batch.{loss, accuracy, lr}, {train, val, test}.{loss, accuracy | mse}, the sharpness metrics and
the ``norm_params`` / ``relu_sparsity`` probes. The specs have a short last batch (N not a
multiple of the batch size, drop_last false), one seed, and one diverges.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from ablab.artifacts import load_npz
from ablab.cli import main
from ablab.spec import RunSpec
from ablab.store import Store
from ablab.train.loop import train
from ablab.train.probes import NormParams, ReluSparsity
from conftest import tiny_study
from replay import replay

DIGITS_TRAIN = 1257  # 9 batches of 128 and one of 105 per epoch

CLASSIFICATION = {
    "data": "digits",
    "model": {"name": "mlp", "widths": [16, 12], "norm": "batchnorm"},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "schedule": {"name": "step", "milestones_steps": [12], "gamma": 0.5, "warmup_steps": 4},
    "epochs": 2,
    "batch_size": 128,
    "device": "cpu",
    "seeds": {"init": 3, "shuffle": 5},
    "record": {
        "every_steps": 3,
        "eval_batch_size": 100,  # evaluation in chunks of 100 with a short last chunk
        "checkpoints": {"final": True},
        "probes": [{"name": "relu_sparsity", "every_steps": 5}, {"name": "norm_params", "every_steps": 4}],
    },
}


def step_lr_factor(s: int) -> float:
    """The schedule above at 1-based step s: linear warmup (s/4) over 4 steps, ×0.5 from the 13th step on."""
    return min(1.0, s / 4) * (0.5 if s - 1 >= 12 else 1.0)


def make_spec(base: dict, **changes) -> RunSpec:
    return RunSpec.model_validate({**base, **changes})


def rows(result, split: str, name: str) -> list[tuple[int, int, float]]:
    return [(s, e, v) for (s, e, sp, n, v) in result.metrics if sp == split and n == name]


def record_steps(total: int, every: int) -> list[int]:
    """The steps training metrics are recorded at: every k steps and the last one."""
    return sorted({s for s in range(every, total + 1, every)} | {total})


def expected_batch_losses(r, steps: list[int]) -> list[float]:
    """batch.loss at each recording step: the mean loss over the steps since the previous one."""
    return [r.mean_loss(prev + 1, s) for prev, s in zip([0, *steps[:-1]], steps)]


def assert_same(stored, expected, rel=1e-5):
    """Equal within float32 rounding, with NaN and ±inf in the same places."""
    np.testing.assert_allclose(np.asarray(stored, float), np.asarray(expected, float), rtol=rel, atol=1e-7)


def assert_evaluations(result, r, splits=("train", "val", "test"), extra="accuracy"):
    """Every evaluation row equals the replay's full-split value at that step and epoch."""
    for split in splits:
        for name in ("loss", extra):
            stored = rows(result, split, name)
            assert [(s, e) for s, e, _ in stored] == [(s, r.eval_epoch[s]) for s in sorted(r.evals)], (split, name)
            assert_same([v for _, _, v in stored], [r.evals[s][(split, name)] for s, _, _ in stored])


@pytest.fixture(scope="module")
def classification():
    spec = make_spec(CLASSIFICATION)
    return train(spec), replay(spec, step_lr_factor)


def test_replay_is_the_run_the_loop_trained(classification):
    """The precondition of every comparison here: replayed final weights equal the run's checkpoint."""
    result, r = classification
    assert result.status == "done", result.error
    stored = torch.load(io.BytesIO(result.artifacts["checkpoint_e0002.pt"]), weights_only=True)["model"]
    replayed = r.model.state_dict()
    assert stored.keys() == replayed.keys()
    for key in stored:
        torch.testing.assert_close(stored[key], replayed[key], rtol=1e-5, atol=1e-6)


def test_batch_metrics_equal_the_replay(classification):
    result, r = classification
    assert result.status == "done", result.error
    steps = record_steps(20, 3)
    assert [s for s, _, _ in rows(result, "batch", "loss")] == steps == [3, 6, 9, 12, 15, 18, 20]
    assert r.batch_size[10] == r.batch_size[20] == DIGITS_TRAIN - 9 * 128  # the short last batches
    assert_same([v for _, _, v in rows(result, "batch", "loss")], expected_batch_losses(r, steps))
    assert_same([v for _, _, v in rows(result, "batch", "accuracy")], [r.accuracy[s] for s in steps])
    assert [v for _, _, v in rows(result, "batch", "lr")] == pytest.approx([r.lr[s] for s in steps], rel=1e-12)
    assert [v for _, _, v in rows(result, "batch", "lr")] == pytest.approx([0.075, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05])
    assert [e for _, e, _ in rows(result, "batch", "loss")] == [1, 1, 1, 2, 2, 2, 2]


def test_evaluations_equal_full_split_forward_passes(classification):
    result, r = classification
    assert sorted(r.evals) == [0, 10, 20]
    assert_evaluations(result, r)


def test_relu_sparsity_divides_each_step_by_its_own_batch(classification):
    """Steps 10 and 20 are the short batches (105 of 128): before the fix every full batch was
    divided by the short batch's element count and stored negative."""
    result, r = classification
    arrays, meta = load_npz(result.artifacts[ReluSparsity.artifact])
    assert list(arrays["steps"]) == [5, 10, 15, 20]
    assert meta["layers"] == r.relu_names == ["act0", "act1"]
    expected = np.stack([r.sparsity[s] for s in arrays["steps"]])
    assert arrays["sparsity"].shape == (4, 2)
    assert ((arrays["sparsity"] >= 0) & (arrays["sparsity"] <= 1)).all()
    assert_same(arrays["sparsity"], expected, rel=1e-6)


def test_norm_params_equal_the_replayed_gamma_and_beta(classification):
    result, r = classification
    arrays, meta = load_npz(result.artifacts[NormParams.artifact])
    assert list(arrays["steps"]) == [0, 4, 8, 12, 16, 20]
    assert [layer["name"] for layer in meta["layers"]] == ["norm0", "norm1"]
    for layer in meta["layers"]:
        name = layer["name"]
        for i, param in enumerate(("gamma", "beta")):
            expected = np.stack([r.norms[s][name][i] for s in arrays["steps"]])
            assert arrays[f"{name}/{param}"].shape == expected.shape == (6, layer["features"])
            assert_same(arrays[f"{name}/{param}"], expected, rel=1e-6)
    assert not np.array_equal(arrays["norm1/gamma"][0], arrays["norm1/gamma"][-1])  # γ trained


def test_frozen_gamma_is_stored_as_exactly_one():
    frozen_gamma = {"name": "batchnorm", "affine": "beta"}
    spec = make_spec(CLASSIFICATION, model={"name": "mlp", "widths": [16, 12], "norm": frozen_gamma})
    result, r = train(spec), replay(spec, step_lr_factor)
    arrays, meta = load_npz(result.artifacts[NormParams.artifact])
    assert all(layer["learnable"] == {"gamma": False, "beta": True} for layer in meta["layers"])
    for name in ("norm0", "norm1"):
        assert (arrays[f"{name}/gamma"] == 1).all()
        assert_same(arrays[f"{name}/beta"], np.stack([r.norms[s][name][1] for s in arrays["steps"]]), rel=1e-6)


def test_regression_records_loss_and_mse_of_the_replay():
    spec = make_spec(
        {**CLASSIFICATION, "data": "diabetes", "loss": "mse", "model": {"name": "mlp", "widths": [8]}},
        optimizer={"name": "sgd", "lr": 0.05}, schedule="constant", batch_size=64, seeds={"init": 1},
        record={"every_steps": 2, "eval_batch_size": 30},
    )
    result, r = train(spec), replay(spec)
    assert result.status == "done", result.error
    assert r.batch_size[5] == 310 - 4 * 64  # diabetes: 310 training examples, a short 5th batch
    steps = record_steps(10, 2)
    assert [s for s, _, _ in rows(result, "batch", "loss")] == steps
    assert_same([v for _, _, v in rows(result, "batch", "loss")], expected_batch_losses(r, steps))
    assert not rows(result, "batch", "accuracy") and not rows(result, "test", "accuracy")
    assert_evaluations(result, r, extra="mse")


def test_diverged_run_stores_what_happened():
    """A huge lr: every stored value is the replay's (non-finite where it was) and the run ends at
    the first non-finite recorded loss, its history kept."""
    spec = make_spec(
        {**CLASSIFICATION, "model": {"name": "mlp", "widths": [16, 12]}},
        optimizer={"name": "sgd", "lr": 1e8, "momentum": 0.9}, schedule="constant",
        record={"every_steps": 2, "probes": [{"name": "relu_sparsity", "every_steps": 1}]},
    )
    result, r = train(spec), replay(spec)
    assert result.status == "diverged" and result.error is None
    stored = rows(result, "batch", "loss")
    stop = stored[-1][0]
    assert [s for s, _, _ in stored] == record_steps(stop, 2)
    expected = expected_batch_losses(r, record_steps(stop, 2))
    assert all(math.isfinite(v) for v in expected[:-1]) and not math.isfinite(expected[-1])
    assert_same([v for _, _, v in stored], expected)
    assert_same([v for _, _, v in rows(result, "batch", "accuracy")], [r.accuracy[s] for s in record_steps(stop, 2)])
    assert max(s for s, _, _, _, _ in result.metrics) == stop  # nothing recorded after divergence
    arrays, _ = load_npz(result.artifacts[ReluSparsity.artifact])
    assert list(arrays["steps"]) == list(range(1, stop + 1))
    expected = np.stack([r.sparsity[s] for s in arrays["steps"]])
    assert_same(arrays["sparsity"], expected, rel=1e-6)
    assert np.isnan(arrays["sparsity"][-1]).all()  # NaN activations: the zeroed fraction is undefined
    finite = arrays["sparsity"][np.isfinite(arrays["sparsity"])]
    assert ((finite >= 0) & (finite <= 1)).all()


def test_sam_run_records_the_clean_pass():
    """With SAM the loss, batch accuracy and ReLU sparsity are those of the clean (first) pass."""
    spec = make_spec(
        {**CLASSIFICATION, "model": {"name": "mlp", "widths": [16, 12]}},
        objective={"name": "sam", "rho": 0.1}, schedule="constant",
        record={"every_steps": 3, "probes": [{"name": "relu_sparsity", "every_steps": 5}]},
    )
    result, r = train(spec), replay(spec)
    assert result.status == "done", result.error
    steps = record_steps(20, 3)
    assert_same([v for _, _, v in rows(result, "batch", "loss")], expected_batch_losses(r, steps))
    assert_same([v for _, _, v in rows(result, "batch", "accuracy")], [r.accuracy[s] for s in steps])
    arrays, _ = load_npz(result.artifacts[ReluSparsity.artifact])
    assert_same(arrays["sparsity"], np.stack([r.sparsity[s] for s in arrays["steps"]]), rel=1e-6)
    assert_evaluations(result, r)


def _flat_loss(model, names_shapes, batch):
    """θ ↦ mean cross-entropy of the model with flat parameters θ on one batch (eval mode)."""
    x, y = batch

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in names_shapes:
            size = math.prod(shape)
            params[name] = theta[start : start + size].reshape(shape)
            start += size
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return loss


def direct_sharpness(model, batches, rho: float) -> tuple[float, float]:
    """(mean_b L_b(θ + ρ g_b/‖g_b‖) − L_b(θ), the largest-magnitude eigenvalue of mean_b ∇²L_b(θ))."""
    model.eval()
    names_shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gaps, hessian = [], torch.zeros(len(theta), len(theta), dtype=torch.float64)
    for batch in batches:
        f = _flat_loss(model, names_shapes, batch)
        g = torch.func.grad(f)(theta)
        gaps.append((f(theta + rho * g / g.norm()) - f(theta)).item())
        hessian += torch.autograd.functional.hessian(f, theta).double() / len(batches)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    return float(np.mean(gaps)), float(eigenvalues[eigenvalues.abs().argmax()])


def test_sharpness_metrics_equal_a_direct_computation():
    """SAM sharpness and the Hessian's top eigenvalue on the first training batches in order
    (700 examples in 256s: the third batch is short), at the final weights, in eval mode."""
    spec = make_spec(
        {**CLASSIFICATION, "data": {"name": "synthetic", "n_features": 4, "n_classes": 3},
         "model": {"name": "mlp", "widths": [8], "norm": "batchnorm"}},
        schedule="constant", batch_size=256, epochs=3,
        record={"every_steps": 5, "evaluators": [
            "standard", {"name": "sharpness", "rho": 0.05, "batches": 8, "hessian_iters": 300}]},
    )
    result, r = train(spec), replay(spec)
    assert result.status == "done", result.error
    train_split = r.data.splits["train"]
    batches = [(train_split.x[i : i + 256], train_split.y[i : i + 256]) for i in (0, 256, 512)]
    assert len(batches[-1][1]) == 700 - 512
    sam, top = direct_sharpness(r.model, batches, rho=0.05)
    ((step, epoch, value),) = rows(result, "train", "sam_sharpness")
    assert (step, epoch) == (9, 3) and value > 0
    assert value == pytest.approx(sam, rel=1e-4)
    ((_, _, eigenvalue),) = rows(result, "train", "hessian_top_eigenvalue")
    assert eigenvalue == pytest.approx(top, rel=1e-3)  # power iteration: measured 2e-5 off


@contextlib.contextmanager
def cpu_threads(n: int):
    """Replay with the thread count the run had (another count may change the last bits)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def test_stored_relu_sparsity_and_losses_equal_the_replay(write_study, tmp_path):
    """Through the CLI into a store: one seed, a short last batch, one run diverged (lr 1e15)."""
    study = tiny_study(seeds={"replicates": 1}, grid={"optimizer.lr": [0.1, 1e15]})
    study["base"].update(epochs=2, record={"every_steps": 5, "eval_splits": ["test"],
                                           "probes": [{"name": "relu_sparsity", "every_steps": 5}]})
    out = tmp_path / "out"
    assert main(["run", str(write_study(study)), "--out", str(out), "--threads", "1"]) == 0
    store = Store.open(out)
    try:
        runs, metrics = store.runs(), store.metrics()
        assert sorted(runs["status"]) == ["diverged", "done"]
        for run in runs.itertuples():
            with cpu_threads(1):
                r = replay(RunSpec.model_validate(run.spec))
            arrays, meta = load_npz(str(store.artifact_path(run.run, ReluSparsity.artifact)))
            assert meta["layers"] == r.relu_names == ["act0"]
            assert_same(arrays["sparsity"], np.stack([r.sparsity[s] for s in arrays["steps"]]), rel=1e-6)
            finite = arrays["sparsity"][np.isfinite(arrays["sparsity"])]
            assert ((finite >= 0) & (finite <= 1)).all()
            losses = metrics[(metrics["run"] == run.run) & (metrics["split"] == "batch") & (metrics["name"] == "loss")]
            steps = list(losses["step"])
            assert_same(losses["value"], expected_batch_losses(r, steps))
            if run.status == "done":
                assert list(arrays["steps"]) == [5, 10, 15, 20] and np.isfinite(arrays["sparsity"]).all()
                assert steps == [5, 10, 15, 20]
            else:
                assert not math.isfinite(losses["value"].iloc[-1]) and steps == [5]
    finally:
        store.close()
