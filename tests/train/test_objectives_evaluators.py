"""Objectives (the step) and evaluators (the measurements) as components, checked against direct computations."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from ablab.registry import EVALUATORS, OBJECTIVES
from ablab.spec import RunSpec
from ablab.train.evaluators import EvalContext, ModelView
from ablab.train.build import plan_duration
from ablab.train.loop import train
from ablab.train.objectives import StepSetup
from conftest import TINY_BASE


def _spec(**kw):
    base = copy.deepcopy(TINY_BASE)
    base.update(kw)
    return RunSpec.model_validate(base)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_the_sam_objective_is_foret_et_al_algorithm_1_on_a_known_batch():
    model, ref = _model(), _model()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    ce = nn.functional.cross_entropy
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sam = OBJECTIVES.create({"name": "sam", "rho": 0.05}, setup=StepSetup(model, opt, ce))
    loss, out = sam.step(model, model, opt, x, y)
    # by hand: g at w, e = ρ g/‖g‖, g' at w+e (running statistics untouched by the 2nd pass), w ← w − lr g'
    params = list(ref.parameters())
    clean_out = ref(x)
    clean = ce(clean_out, y)
    g = torch.autograd.grad(clean, params)
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    stats = [b.clone() for b in ref.buffers()]
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(0.05 * gi / (norm + 1e-12))
    g2 = torch.autograd.grad(ce(ref(x), y), params)
    with torch.no_grad():
        for p, gi, e in zip(params, g2, g):
            p.sub_(0.05 * e / (norm + 1e-12)).sub_(0.1 * gi)
        for b, s in zip(ref.buffers(), stats):
            b.copy_(s)
    torch.testing.assert_close(loss, clean.detach())
    torch.testing.assert_close(out, clean_out.detach())
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert model[1].num_batches_tracked.item() == 1  # counted once per step, by the clean pass


def test_a_compute_budget_asks_the_objective_what_a_step_costs():
    plain = plan_duration(_spec(epochs=None, budget_epochs=4), 1000)
    sam = plan_duration(_spec(epochs=None, budget_epochs=4, objective={"name": "sam"}), 1000)
    assert sam.total_steps * 2 == plain.total_steps and sam.grad_evals_per_step == 2
    assert sam.info()["gradient_evaluations"] == plain.info()["gradient_evaluations"]


def test_the_old_sam_and_sharpness_keys_say_where_they_moved():
    with pytest.raises(Exception, match="objective: {name: sam"):
        _spec(sam={"rho": 0.05})
    with pytest.raises(Exception, match="now an evaluator"):
        _spec(record={"sharpness": {"rho": 0.05}})
    with pytest.raises(Exception, match="record.checkpoints"):
        _spec(record={"checkpoint": True})


def test_a_sam_run_trains_and_records_the_clean_loss():
    r = train(_spec(objective={"name": "sam", "rho": 0.05}, epochs=1))
    assert r.status == "done", r.error
    assert r.info["gradient_evaluations"] == 2 * r.info["steps"]


def _ctx(members, classification=True, batch=7):
    return EvalContext(members, nn.functional.cross_entropy, classification, batch, batch)


class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def rows(self, index):
        return self.x[index], self.y[index]


def test_the_standard_evaluator_weights_a_short_last_batch_per_example():
    model = _model().eval()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))  # batches of 7: 7, 7, 6
    ev = EVALUATORS.create("standard")
    got = ev.evaluate(_ctx([ModelView(model, model)]), "test", _Split(x, y), 1).metrics
    with torch.no_grad():
        out = model(x)
    assert got["loss"] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-6)
    assert got["accuracy"] == pytest.approx((out.argmax(1) == y).double().mean().item())
    assert ev.directions(True) == {"loss": "min", "accuracy": "max"}
    assert ev.directions(False) == {"loss": "min", "mse": "min"}


def test_predictions_are_the_model_outputs_in_split_order():
    model = _model()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    out = EVALUATORS.create("predictions").evaluate(_ctx([ModelView(model, model)]), "test", _Split(x, y), 3)
    assert sorted(out.artifacts) == ["labels_test_e0003.npy", "predictions_test_e0003.npy"]
    kind, data = out.artifacts["predictions_test_e0003.npy"]
    assert kind == "predictions" and out.artifacts["labels_test_e0003.npy"][0] == "labels"
    import io

    got = np.load(io.BytesIO(data), allow_pickle=False)
    labels = np.load(io.BytesIO(out.artifacts["labels_test_e0003.npy"][1]), allow_pickle=False)
    np.testing.assert_array_equal(labels, y.numpy())
    assert labels.dtype == np.int64
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32 and model.training is False  # the model's mode is left as found


def test_predictions_store_soft_labels_as_their_argmax_and_regression_no_labels():
    import io

    model = _model()
    x, y = torch.randn(9, 4), torch.softmax(torch.randn(9, 3), dim=1)
    out = EVALUATORS.create("predictions").evaluate(_ctx([ModelView(model, model)]), "test", _Split(x, y), 1)
    labels = np.load(io.BytesIO(out.artifacts["labels_test_e0001.npy"][1]), allow_pickle=False)
    np.testing.assert_array_equal(labels, y.argmax(1).numpy())
    out = EVALUATORS.create("predictions").evaluate(_ctx([ModelView(model, model)], classification=False), "test",
                                                    _Split(x, torch.randn(9, 3)), 1)
    assert sorted(out.artifacts) == ["predictions_test_e0001.npy"]


def test_activations_are_the_chosen_layers_outputs_on_the_first_examples():
    from ablab.artifacts import load_npz

    model = _model()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))  # 15 examples in batches of 7: 7, 7, 1
    ev = EVALUATORS.create({"name": "activations", "layers": ["1", "3"], "examples": 15})
    out = ev.evaluate(_ctx([ModelView(model, model)]), "test", _Split(x, y), 2)
    (name, (kind, data)), = out.artifacts.items()
    assert name == "activations_test_e0002.npz" and kind == "activations"
    arrays, meta = load_npz(data)
    model.eval()
    with torch.no_grad():
        hidden = model[1](model[0](x[:15]))
        np.testing.assert_allclose(arrays["1"], hidden.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(arrays["3"], model(x[:15]).numpy(), rtol=1e-6, atol=1e-7)
    assert meta == {"layers": ["1", "3"], "examples": 15} and model.training is False
    with pytest.raises(ValueError, match="no layer 'fc9'.*it has: 0, 1, 2, 3"):
        EVALUATORS.create({"name": "activations", "layers": ["fc9"]}).evaluate(
            _ctx([ModelView(model, model)]), "test", _Split(x, y), 2)


def test_ensemble_and_disagreement_against_direct_computation():
    a, b = _model().eval(), _model().eval()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    views = [ModelView(a, a), ModelView(b, b)]
    ens = EVALUATORS.create("ensemble").evaluate(_ctx(views), "test", _Split(x, y), 0).metrics
    dis = EVALUATORS.create("disagreement").evaluate(_ctx(views), "test", _Split(x, y), 0).metrics
    with torch.no_grad():
        la, lb = a(x), b(x)
    mean = (la + lb) / 2
    assert ens["ensemble_loss"] == pytest.approx(nn.functional.cross_entropy(mean, y).item(), rel=1e-6)
    assert ens["ensemble_accuracy"] == pytest.approx((mean.argmax(1) == y).double().mean().item())
    assert dis["disagreement"] == pytest.approx((la.argmax(1) != lb.argmax(1)).double().mean().item())
    assert 0 < dis["disagreement"] < 1
    with pytest.raises(ValueError, match="at least two"):
        EVALUATORS.create("disagreement").evaluate(_ctx(views[:1]), "test", _Split(x, y), 0)


def test_the_sharpness_evaluator_records_what_the_analysis_functions_compute():
    from ablab.optim.sharpness import sam_sharpness

    spec = _spec(epochs=1, record={"every_steps": 5, "eval_splits": ["test"],
                                   "evaluators": ["standard", {"name": "sharpness", "rho": 0.05, "batches": 2,
                                                               "hessian_iters": 0}]})
    r = train(spec)
    assert r.status == "done", r.error
    rows = [row for row in r.metrics if row[3] == "sam_sharpness"]
    assert len(rows) == 1 and rows[0][2] == "train" and rows[0][1] == 1  # at the last epoch, on training batches
    assert r.directions["sam_sharpness"] == "min" and r.directions["accuracy"] == "max"
    # recompute on the final model (kept by a final checkpoint) with the first two training batches in order
    spec2 = _spec(epochs=1, record={"every_steps": 5, "eval_splits": ["test"], "checkpoints": {"final": True}})
    r2 = train(spec2)
    from ablab.artifacts import load_checkpoint
    from ablab.train.build import build_model, load_run_data

    data = load_run_data(spec2)
    model = build_model(spec2, data)
    model.load_state_dict(load_checkpoint(r2.artifacts["checkpoint_e0001.pt"])["model"])
    tr = data.splits["train"]
    batches = [tr.rows(slice(0, 128)), tr.rows(slice(128, 256))]
    assert rows[0][4] == pytest.approx(sam_sharpness(model, nn.functional.cross_entropy, batches, 0.05), rel=1e-5)


def test_evaluators_run_at_the_epochs_they_ask_for():
    spec = _spec(epochs=3, record={"every_steps": 5, "eval_splits": ["val"], "eval_every_epochs": 2,
                                   "evaluators": ["standard", {"name": "predictions", "splits": ["test"],
                                                               "epochs": [1, 3]}]})
    r = train(spec)
    assert sorted({row[1] for row in r.metrics if row[2] == "val"}) == [0, 2, 3]  # every 2nd epoch, 0 and the last
    assert sorted(r.artifacts) == ["labels_test_e0001.npy", "labels_test_e0003.npy",
                                   "predictions_test_e0001.npy", "predictions_test_e0003.npy"]
    recs = {a.name: a for a in r.artifacts.records()}
    assert recs["predictions_test_e0003.npy"].split == "test" and recs["predictions_test_e0003.npy"].epoch == 3


def test_a_diverged_run_stores_no_later_evaluation_or_checkpoint():
    spec = _spec(epochs=4, model="linear", loss="mse", optimizer={"name": "sgd", "lr": 10.0},
                 record={"every_steps": 1, "eval_splits": ["test"], "checkpoints": {"epochs": [0], "every_epochs": 1}})
    r = train(spec)
    assert r.status == "diverged"
    losses = [row for row in r.metrics if row[2] == "batch" and row[3] == "loss"]
    assert not np.isfinite(losses[-1][4]) and all(np.isfinite([row[4] for row in losses[:-1]]))
    diverged_in = losses[-1][1]
    saved = [a.epoch for a in r.artifacts.records() if a.kind == "checkpoint"]
    assert saved == list(range(diverged_in))  # epochs 0..k-1 were finite and saved; nothing after
    assert max(row[1] for row in r.metrics if row[2] == "test") < diverged_in


def test_the_asam_objective_scales_weights_only_by_default_as_the_official_code():
    from ablab.optim.sam import SAM

    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    ce = nn.functional.cross_entropy
    after = {}
    for which in ("weights", "all"):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        obj = OBJECTIVES.create({"name": "sam", "rho": 0.5, "adaptive": True, "adaptive_params": which},
                                setup=StepSetup(model, opt, ce))
        assert obj.sam._unscaled == (
            {id(p) for n, p in model.named_parameters() if "weight" not in n} if which == "weights" else set())
        obj.step(model, model, opt, x, y)
        after[which] = [p.detach().clone() for p in model.parameters()]
    # "all" is plain element-wise ASAM over every parameter: the SAM optimizer with nothing unscaled
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sam = SAM(list(model.parameters()), opt, rho=0.5, adaptive=True)
    ce(model(x), y).backward()
    sam.first_step()
    from ablab.optim.sam import bn_running_stats_frozen

    with bn_running_stats_frozen(model):
        ce(model(x), y).backward()
    sam.second_step()
    for a, b in zip(after["all"], model.parameters()):
        torch.testing.assert_close(a, b.detach())
    assert any(not torch.equal(a, b) for a, b in zip(after["weights"], after["all"]))


def test_an_unknown_activations_layer_is_a_validation_error(write_study, tmp_path, capsys):
    from ablab.cli import main

    study = {"name": "acts", "base": {"data": "digits", "model": {"name": "mlp", "widths": [8]},
                                      "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 64,
                                      "device": "cpu", "record": {"eval_splits": ["test"], "evaluators": [
                                          "standard", {"name": "activations", "layers": ["act0", "nope"]}]}}}
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "base.record.evaluators: activations: no layer 'nope' in the model; it has: flatten, fc0, act0, fc1" in err
    assert not out.exists()
