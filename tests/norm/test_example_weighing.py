"""Inference example weighing end to end: a post-hoc α sweep over stored checkpoints (seed 002, Eq. 4.3, Fig. 4.1–4.4).

The source study (tests/norm/studies/weighing_source.yaml) trains BN, ghost BN (B′ = 4, 16) and GN
with moving averages; the post-hoc study sweeps α ∈ {0, 0.25, 1}. Every stored number is checked
against an independent computation: α = 0 against the training run's own eval-mode numbers, α = 1
against the model with its norm layers swapped for ``nn.InstanceNorm2d`` / ``nn.GroupNorm``, and
α = 0.25 against Eq. 4.3 written out in float64 in this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ablab.cli import main
from ablab.norm.weighing import weighable_layers
from ablab.spec import RunSpec
from ablab.store import Store
from conftest import stored

STUDIES = Path(__file__).parent / "studies"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(source dir, α-sweep dir): the two test specs run through the CLI."""
    d = tmp_path_factory.mktemp("weighing")
    assert main(["run", str(STUDIES / "weighing_source.yaml"), "--out", str(d / "src")]) == 0
    assert main(["run", str(STUDIES / "weighing_alpha.yaml"), "--set", f"source.study={d / 'src'}",
                 "--out", str(d / "alpha")]) == 0
    return d / "src", d / "alpha"


class Eq43(nn.Module):
    """Eq. 4.3 written out in float64 from a trained layer's buffers: μ, E[x²] mixed by α, channel groups pooled."""

    def __init__(self, layer: nn.Module, alpha: float, groups: int):
        super().__init__()
        self.layer, self.alpha, self.groups = layer, alpha, groups

    def forward(self, x):
        n, c, h, w = x.shape
        g, a = self.groups, self.alpha
        xd = x.double().reshape(n, g, -1)
        own_x, own_x2 = xd.mean(2), xd.square().mean(2)
        m = self.layer.running_mean.double()
        m2 = self.layer.running_var.double() + m.square()
        mov_x, mov_x2 = m.reshape(g, -1).mean(1), m2.reshape(g, -1).mean(1)
        mu = a * own_x + (1 - a) * mov_x
        var = a * own_x2 + (1 - a) * mov_x2 - mu.square()
        y = (xd - mu[..., None]) / torch.sqrt(var[..., None] + self.layer.eps)
        y = y.reshape(n, c, h, w) * self.layer.weight.double().reshape(1, c, 1, 1) + self.layer.bias.double().reshape(1, c, 1, 1)
        return y.float()


def restored(source: Path, run: str):
    """The stored run's model (eval mode) and data, built independently of the post-hoc unit."""
    from ablab.train.build import build_model, load_run_data

    store = Store.open(source)
    try:
        spec = RunSpec.model_validate(store.runs().set_index("run").spec[run])
        data = load_run_data(spec)
        model = build_model(spec, data)
        model.load_state_dict(store.load_checkpoint(run, "final")["model"])
    finally:
        store.close()
    return model.eval(), data


def swapped(model: nn.Module, make) -> nn.Module:
    """The model with each weighable norm layer replaced by ``make(layer)``."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child in weighable_layers(model):
                setattr(module, child_name, make(child))
    return model


def loss_accuracy(model, split):
    with torch.no_grad():
        out = model(split.x)
    return nn.functional.cross_entropy(out, split.y).item(), (out.argmax(1) == split.y).double().mean().item()


def with_affine(reference: nn.Module, layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        reference.weight.copy_(layer.weight), reference.bias.copy_(layer.bias)
    return reference


def test_every_stored_alpha_number_is_the_independent_computation(sweep):
    source, alpha = sweep
    metrics, runs = stored(alpha)
    src_metrics, src_runs = stored(source)
    assert len(runs) == 4 * 3 and set(runs.status) == {"done"}
    for r in runs.itertuples():
        (member,) = r.spec["members"]
        a = r.spec["evaluators"][0]["alpha"]
        norm = member["spec"]["model"]["norm"]
        groups = norm.get("groups", 8) if norm["name"] == "group_norm" else 8
        for split in ("val", "test"):
            got = metrics[(metrics.run == r.run) & (metrics.split == split)].set_index("name").value
            own = src_metrics[(src_metrics.run == member["run"]) & (src_metrics.split == split)]
            own = own[own.step == own.step.max()].set_index("name").value
            model, data = restored(source, member["run"])
            if a == 0.0 and norm["name"] != "group_norm":  # ordinary eval-mode BN: the training run's own numbers
                expected = own["loss"], own["accuracy"]
            elif a == 1.0 and norm["name"] == "group_norm":  # GN evaluates with the example alone
                expected = own["loss"], own["accuracy"]
            elif a == 1.0:
                expected = loss_accuracy(swapped(model, lambda l: with_affine(
                    nn.InstanceNorm2d(8, affine=True, eps=l.eps), l)), data.splits[split])
            else:
                expected = loss_accuracy(swapped(model, lambda l, a=a, g=groups: Eq43(l, a, g)), data.splits[split])
            assert got["weighed_loss"] == pytest.approx(expected[0], rel=1e-5, abs=1e-6), (r.label, split)
            assert got["weighed_accuracy"] == pytest.approx(expected[1], abs=1e-9), (r.label, split)
    gn0 = metrics.merge(runs[["run", "label"]], on="run")
    assert len(gn0[gn0.label.str.startswith("gn")]) == 3 * 2 * 2  # GN at α = 0 is defined too (moving averages kept)


def test_alpha_outside_0_1_is_one_clear_error_and_nothing_is_written(sweep, tmp_path, capsys):
    source, _ = sweep
    out = tmp_path / "bad"
    code = main(["run", str(STUDIES / "weighing_alpha.yaml"), "--set", f"source.study={source}",
                 "--set", "grid={evaluators.0.alpha: [0.5, 1.5]}", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and err[0].startswith("error: ") and "less than or equal to 1" in err[0], err


def test_example_weighing_on_a_model_without_moving_averages_is_refused_at_validation(tmp_path, capsys):
    spec = yaml.safe_load((STUDIES / "weighing_source.yaml").read_text())
    spec.pop("zip")
    spec["base"]["model"]["norm"] = "none"
    spec["base"]["record"]["evaluators"] = ["standard", "example_weighing"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "example_weighing needs norm layers with moving averages" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 30}, "4 examples per norm group (B′) do not divide the training batch of 30"),
    ({"drop_last": False, "data.val_size": 299}, "4 examples per norm group (B′) do not divide the last training "
                                                 "batch of 14 (1198 examples in batches of 32; drop_last: true drops it)"),
    ({"model.norm": {"name": "group_norm", "groups": 3}}, "the channel group count 3 does not divide the 8 channels"),
    ({"model.norm": {"name": "batch_group_norm", "groups": 2, "examples": 3}}, "3 examples per norm group"),
])
def test_bad_group_sizes_are_one_clear_error_with_exit_2_and_nothing_written(change, message, tmp_path, capsys):
    spec = yaml.safe_load((STUDIES / "weighing_source.yaml").read_text())
    spec.pop("zip")
    spec["base"]["model"]["norm"] = {"name": "ghost_batchnorm", "ghost_size": 4}
    for key, value in change.items():
        node = spec["base"]
        *head, last = key.split(".")
        for part in head:
            node = node[part]
        node[last] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_the_report_shows_alpha_curves_ghost_size_heatmap_and_table_4_1_from_the_stored_numbers(sweep):
    """Table 4.1's analogue recomputed here from the stored metrics: α off, α with the best val accuracy on test."""
    import pandas as pd

    _, alpha = sweep
    assert main(["report", str(alpha)]) == 0
    report = alpha / "report"
    page = (report / "index.html").read_text()
    assert "Inference example weighing" in page and "Fig. 4.1" in page and "Fig. 4.4" in page and "Table 4.1" in page
    for name in ("example_weighing_alpha.png", "example_weighing_ghost.png", "example_weighing_grid.png"):
        assert (report / "figures" / name).stat().st_size > 1000
    table = pd.read_csv(report / "tables" / "example_weighing_table_4_1.csv").set_index("model")
    metrics, runs = stored(alpha)
    acc = metrics[metrics.name == "weighed_accuracy"].merge(runs[["run", "spec"]], on="run")
    acc["alpha"] = [s["evaluators"][0]["alpha"] for s in acc.spec]
    acc["model"] = [s["members"][0]["label"].split(" #")[0] for s in acc.spec]
    assert set(table.index) == {"bn", "ghost4", "ghost16", "gn"}
    for model, part in acc.groupby("model"):
        val = part[part.split == "val"].set_index("alpha").value
        test = part[part.split == "test"].set_index("alpha").value
        best = min(a for a in val.index if val[a] == val.max())
        off = 1.0 if model == "gn" else 0.0
        assert table.loc[model, "off"] == pytest.approx(100 * test[off], abs=1e-9)
        assert table.loc[model, "tuned"] == pytest.approx(100 * test[best], abs=1e-9)
        assert float(table.loc[model, "alphas"]) == best
    assert list(table["method"]) == ["Batch Norm", "Ghost BN", "Ghost BN", "Group Norm"]
    assert list(table["ghost"]) == [32, 16, 4, 1]
    curves = pd.read_csv(report / "tables" / "example_weighing_alpha.csv")
    assert len(curves) == 4 * 3 and set(curves.alpha) == {0.0, 0.25, 1.0}


def test_table_4_1_puts_the_thesis_numbers_beside_matching_rows():
    import pandas as pd

    from ablab.analysis.weighing import table_4_1

    rows = []
    for norm, ghost, model in (("ghost_batchnorm", 32, "g32"), ("batch_group_norm", 2, "bgn"), ("group_norm", 1, "gn")):
        for split, accs in (("val", {0.0: 0.5, 0.5: 0.6, 1.0: 0.55}), ("test", {0.0: 0.4, 0.5: 0.7, 1.0: 0.65})):
            for a, value in accs.items():
                rows.append({"unit": f"{model}{a}", "model": model, "source_run": model, "replicate": 0, "norm": norm,
                             "ghost": ghost, "batch_size": 128, "alpha": a, "split": split, "accuracy": value,
                             "loss": 1.0})
    table = table_4_1(pd.DataFrame(rows), thesis=True).set_index("model")
    assert (table.loc["g32", "thesis_off"], table.loc["g32", "thesis_tuned"]) == (57.8, 70.9)
    assert (table.loc["bgn", "thesis_off"], table.loc["bgn", "thesis_tuned"]) == (75.2, 76.1)
    assert pd.isna(table.loc["gn", "thesis_off"])
    assert table.loc["g32", "off"] == pytest.approx(40.0) and table.loc["g32", "tuned"] == pytest.approx(70.0)
    assert table.loc["gn", "off"] == pytest.approx(65.0)  # GroupNorm's ordinary evaluation is α = 1


def test_weighed_numbers_do_not_depend_on_the_evaluation_batches(sweep, tmp_path):
    """Eq. 4.3 uses each example's own statistics and the stored averages only: evaluation batches of 7 (a short
    last one of 3 or 6 examples) give the numbers of one batch of all, per-example weighted."""
    source, alpha = sweep
    out = tmp_path / "small_batches"
    assert main(["run", str(STUDIES / "weighing_alpha.yaml"), "--set", f"source.study={source}",
                 "--set", "base.eval_batch_size=7", "--set", "grid={evaluators.0.alpha: [0.25]}",
                 "--out", str(out)]) == 0
    small, small_runs = stored(out)
    full, full_runs = stored(alpha)
    key = lambda m, r: m.merge(r[["run", "spec"]], on="run").assign(  # noqa: E731
        member=lambda d: [s["members"][0]["run"] for s in d.spec],
        alpha=lambda d: [s["evaluators"][0]["alpha"] for s in d.spec]).set_index(["member", "alpha", "split", "name"])
    a, b = key(small, small_runs)["value"], key(full, full_runs)["value"]
    assert len(a) == 4 * 2 * 2
    for index, value in a.items():
        assert value == pytest.approx(b[index], rel=1e-5, abs=1e-6), index
