"""The robust and logit_stats evaluators against direct computations (seed 002 Tables 3.1–3.6, Fig. 3.1–3.2)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablab.artifacts import load_npz
from ablab.data.augment import normalize
from ablab.data.base import Dataset, Split
from ablab.errors import SpecError
from ablab.registry import EVALUATORS
from ablab.train.attacks import fgsm, pgd
from ablab.train.evaluators import EvalContext, ModelView
from ablab.train.robust import subsample

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


def problem(n=23, device="cpu", classes=3):
    """A small MLP on 8 'pixels' in [0, 1] with a normalize step in front, and a split of ``n`` rows."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes)).to(device)
    g = torch.Generator().manual_seed(1)
    split = Split(torch.rand(n, 2, 2, 2, generator=g).to(device), torch.randint(classes, (n,), generator=g).to(device))
    data = Dataset("d", {"test": split}, in_shape=(2, 2, 2), out_dim=classes, mean=(0.5, 0.4), std=(0.3, 0.2))
    return model, split, data


def context(model, data, batch_size=5, device="cpu"):
    norm = normalize(data)
    return EvalContext([ModelView(model, model)], F.cross_entropy, True, batch_size, batch_size, (norm,),
                       torch.device(device)), norm


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("examples", [None, 1, 5, 11, 23])
def test_stored_numbers_equal_a_direct_computation(device, examples):
    """Batches of 5 (a short last one) give what one pass over the subsample, computed here by hand, gives."""
    model, split, data = problem(device=device)
    ctx, norm = context(model, data, device=device)
    ev = EVALUATORS.create({"name": "robust", "examples": examples, "seed": 4,
                            "attack": {"name": "pgd", "eps": 0.1, "step": 0.03, "steps": 3, "random_start": False}})
    got = ev.evaluate(ctx, "test", split, 0).metrics
    rows = subsample(len(split), examples, 4).to(device)
    x, y = split.x[rows], split.y[rows]
    # per example: the attack of one row does not depend on the rows batched with it
    adv = torch.cat([pgd(model, x[i:i + 1], y[i:i + 1], 0.1, 0.03, 3, random_start=False, transforms=(norm,))
                     for i in range(len(x))])
    with torch.no_grad():
        out = model(norm(adv, y, None)[0])
        clean = model(norm(x, y, None)[0])
    assert got["pgd3_accuracy"] == (out.argmax(1) == y).double().mean().item()
    assert got["pgd3_loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert got["pgd3_clean_accuracy"] == (clean.argmax(1) == y).double().mean().item()


def test_subsample_is_fixed_sorted_distinct_and_seeded():
    a, b, c = subsample(100, 10, 0), subsample(100, 10, 0), subsample(100, 10, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 10 and torch.equal(a, a.sort().values) and a.max() < 100
    assert torch.equal(subsample(7, None, 0), torch.arange(7)) and len(subsample(7, 7, 3)) == 7
    with pytest.raises(ValueError, match="larger than the split"):
        subsample(7, 8, 0)


def test_random_start_robust_accuracy_is_bitwise_reproducible():
    model, split, data = problem()
    ctx, _ = context(model, data)
    spec = {"name": "robust", "attack": {"name": "pgd", "eps": 0.2, "step": 0.05, "steps": 2}}
    runs = [EVALUATORS.create(spec).evaluate(ctx, "test", split, 0).metrics for _ in range(2)]
    assert runs[0] == runs[1]


def test_several_attacks_in_one_run_have_their_own_metric_names():
    specs = [{"name": "robust", "attack": "fgsm"}, {"name": "robust", "attack": {"name": "pgd", "steps": 5}},
             {"name": "robust", "attack": {"name": "pgd", "steps": 20}}, {"name": "robust", "attack": "spsa"}]
    names = [set(EVALUATORS.create(s).directions(True)) for s in specs]
    assert [sorted(n)[0] for n in names] == ["fgsm_accuracy", "pgd5_accuracy", "pgd20_accuracy", "spsa_accuracy"]


@pytest.mark.parametrize("device", DEVICES)
def test_logit_stats_equal_a_direct_computation(device):
    model, split, data = problem(device=device)
    ctx, norm = context(model, data, device=device)
    ev = EVALUATORS.create({"name": "logit_stats", "attack": {"name": "fgsm", "eps": 0.1}, "bins": 8, "limit": 2.0})
    result = ev.evaluate(ctx, "test", split, 3)
    x, y = split.x, split.y
    adv = torch.cat([fgsm(model, x[i:i + 5], y[i:i + 5], 0.1, transforms=(norm,)) for i in range(0, len(x), 5)])
    with torch.no_grad():
        clean, attacked = (model(norm(v, y, None)[0]).double().cpu().numpy() for v in (x, adv))
    m = result.metrics
    assert m["logit_variance"] == pytest.approx(clean.var(), rel=1e-6)
    assert m["logit_range"] == pytest.approx(clean.max() - clean.min(), rel=1e-6)
    assert m["adv_logit_variance"] == pytest.approx(attacked.var(), rel=1e-6)  # float32 forwards batched differently
    (name, (kind, data_bytes)), = result.artifacts.items()
    assert name == "logit_histogram_test_e0003.npz" and kind == "logit_histogram"
    arrays, meta = load_npz(data_bytes)
    assert meta["examples"] == len(x) and arrays["clean"].sum() == clean.size == arrays["attacked"].sum()
    edges = np.linspace(-2, 2, 9)
    inner = clean[(clean > -2) & (clean < 2)]
    assert arrays["clean"][1:-1].sum() == ((inner >= edges[1]) & (inner < edges[-2])).sum()


def test_logit_stats_without_an_attack_is_clean_only():
    model, split, data = problem()
    ctx, _ = context(model, data)
    ev = EVALUATORS.create({"name": "logit_stats", "attack": None})
    assert set(ev.evaluate(ctx, "test", split, 0).metrics) == {"logit_variance", "logit_range"}


def test_check_refuses_a_regression_a_small_split_and_data_outside_the_bounds():
    _, split, data = problem()
    ev = EVALUATORS.create({"name": "robust", "examples": 24})
    with pytest.raises(SpecError, match="larger than split 'test'"):
        ev.check(data)
    EVALUATORS.create({"name": "robust", "examples": 23}).check(data)
    wide = Dataset("d", {"test": Split(split.x * 2, split.y)}, in_shape=(2, 2, 2), out_dim=3)
    with pytest.raises(SpecError, match=r"outside the attack's bounds \[0.0, 1.0\]"):
        EVALUATORS.create("robust").check(wide)
    EVALUATORS.create({"name": "robust", "attack": {"name": "fgsm", "bounds": [0, 2]}}).check(wide)
    if importlib.util.find_spec("torchattacks") is not None:
        with pytest.raises(SpecError, match="outside the attack's bounds") as err:
            EVALUATORS.create("autoattack").check(wide)
        assert err.value.field == "name"
    reg = Dataset("r", {"test": Split(split.x, split.x.flatten(1))}, in_shape=(2, 2, 2), out_dim=8, task="regression")
    with pytest.raises(SpecError, match="attacks a classifier"):
        EVALUATORS.create("robust").check(reg)


def test_from_a_study_spec_through_the_cli_into_the_store(write_study, tmp_path):
    """A tiny digits study with FGSM and PGD evaluators and normalize: the stored numbers are the final
    model's, recomputed here from its checkpoint on the whole test split (360 images, batches of 128: short last)."""
    from ablab.cli import main
    from ablab.spec import RunSpec
    from ablab.store import Store
    from ablab.train.build import build_model, load_run_data
    from conftest import stored, tiny_study

    pgd_spec = {"name": "pgd", "eps": 0.1, "step": 0.03, "steps": 3, "random_start": False}
    study = tiny_study(seeds={"replicates": 1})
    study["base"]["augment"] = ["normalize"]
    study["base"]["record"].update(eval_splits=["test"], checkpoints={"final": True}, evaluators=[
        "standard", {"name": "robust", "attack": {"name": "fgsm", "eps": 0.1}},
        {"name": "robust", "attack": pgd_spec}, {"name": "logit_stats", "attack": "fgsm", "examples": 50}])
    out = tmp_path / "out"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 0
    metrics, runs = stored(out)
    (run, spec_json), = runs[["run", "spec"]].itertuples(index=False)
    spec = RunSpec.model_validate(spec_json)
    data = load_run_data(spec)
    model = build_model(spec, data)
    store = Store.open(out)
    try:
        model.load_state_dict(store.load_checkpoint(run, "final")["model"])
        assert store.artifacts(run)["name"].str.startswith("logit_histogram_test").any()
    finally:
        store.close()
    model.eval()
    norm = normalize(data)
    x, y = data.splits["test"].x, data.splits["test"].y
    value = metrics[(metrics.split == "test") & (metrics.epoch == metrics.epoch.max())].set_index("name").value
    for label, attack in (("fgsm", lambda a, b: fgsm(model, a, b, 0.1, transforms=(norm,))),
                          ("pgd3", lambda a, b: pgd(model, a, b, 0.1, 0.03, 3, random_start=False, transforms=(norm,)))):
        adv = torch.cat([attack(x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
        with torch.no_grad():
            out_adv = model(norm(adv, y, None)[0])
        assert value[f"{label}_accuracy"] == (out_adv.argmax(1) == y).double().mean().item()
        assert value[f"{label}_loss"] == pytest.approx(F.cross_entropy(out_adv, y).item(), rel=1e-5)
        assert value[f"{label}_clean_accuracy"] == value["accuracy"]
    assert value["adv_logit_variance"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_autoattack_equals_torchattacks_run_by_hand_and_is_clean_accuracy_at_eps_0(device):
    ta = pytest.importorskip("torchattacks")
    model, split, data = problem(n=12, classes=5, device=device)
    ctx, norm = context(model, data, device=device)
    EVALUATORS.create("autoattack").check(data)
    with pytest.raises(SpecError, match="needs 4 or more classes"):
        EVALUATORS.create("autoattack").check(problem(classes=3)[2])
    got = EVALUATORS.create({"name": "autoattack", "eps": 0.1, "seed": 2}).evaluate(ctx, "test", split, 0).metrics
    pixels = nn.Sequential(nn.Flatten(0, 0), model)
    pixels.forward = lambda x: model(norm(x, None, None)[0])  # type: ignore[method-assign]
    x, y = split.x, split.y
    clean_acc, adv_acc = 0, 0
    for i in range(0, 12, 5):
        xb, yb = x[i:i + 5], y[i:i + 5]
        with torch.random.fork_rng(devices=[0] if device == "cuda" else []):
            adv = ta.AutoAttack(pixels, norm="Linf", eps=0.1, version="standard", n_classes=5, seed=2)(xb, yb)
        with torch.no_grad():
            adv_acc += int((pixels(adv).argmax(1) == yb).sum())
            clean_acc += int((pixels(xb).argmax(1) == yb).sum())
    assert got == {"autoattack_accuracy": adv_acc / 12, "autoattack_clean_accuracy": clean_acc / 12}
    zero = EVALUATORS.create({"name": "autoattack", "eps": 0.0}).evaluate(ctx, "test", split, 0).metrics
    assert zero["autoattack_accuracy"] == zero["autoattack_clean_accuracy"] == clean_acc / 12


@pytest.mark.parametrize("device", DEVICES)
def test_transfer_scores_the_target_on_the_sources_adversarial_examples(device):
    source, split, data = problem(device=device)
    torch.manual_seed(5)
    target = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
    ctx, norm = context(source, data, device=device)
    ctx.members.append(ModelView(target, target))
    attack = {"name": "pgd", "eps": 0.2, "step": 0.05, "steps": 4, "random_start": False}
    got = EVALUATORS.create({"name": "transfer", "attack": attack}).evaluate(ctx, "test", split, 0).metrics
    x, y = split.x, split.y
    adv = torch.cat([pgd(source, x[i:i + 1], y[i:i + 1], 0.2, 0.05, 4, random_start=False, transforms=(norm,))
                     for i in range(len(x))])
    with torch.no_grad():
        acc = {name: (m(norm(v, y, None)[0]).argmax(1) == y).double().mean().item()
               for name, m, v in (("transfer_accuracy", target, adv), ("transfer_source_accuracy", source, adv),
                                  ("transfer_clean_accuracy", target, x))}
    assert got == acc
