"""The seed 002 ch. 2 studies: the CIFAR screen and its continuation validate and select per arm; the CPU study runs.

The continuation needs a finished screen: the test runs the CIFAR-10 screen on a fake 150-image
CIFAR-10 folder with a linear model (``--set model=linear``, 3 copies per arm instead of 20), then
checks that ``cifar10.yaml`` continues, for every arm, exactly the 3 copies of that arm with the
lowest final ``batch.loss`` (a direct pandas computation on the stored screen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import ablab

from ablab.cli import main
from ablab.data.mixing import METHODS
from ablab.spec import expand, load_study
from conftest import stored
from fileformats import write_cifar10_folder

STUDIES = Path(__file__).resolve().parents[2] / "studies" / "mixing"


@pytest.fixture(scope="module")
def fake_cifar10(tmp_path_factory):
    """A CIFAR-10 folder in the official pickle layout: 5 × 30 training images, 30 test images."""
    return write_cifar10_folder(tmp_path_factory.mktemp("c10"), 30, np.random.default_rng(0))


def _spec(name: str) -> dict:
    return yaml.safe_load((STUDIES / name).read_text())


@pytest.mark.parametrize("name", ["cifar10_screen.yaml", "cifar10.yaml", "cifar100_screen.yaml", "cifar100.yaml",
                                  "cpu.yaml"])
def test_every_study_has_the_17_arms_in_table_order_and_the_seed_protocol(name):
    spec = _spec(name)
    assert spec["zip"]["label"] == list(METHODS)
    mix_axis = [k for k in spec["zip"] if k.startswith("augment.")]
    arms = spec["zip"][mix_axis[0]]
    assert len(mix_axis) == 1 and [a if isinstance(a, str) else a["name"] for a in arms] == list(METHODS)
    augment = spec["base"]["augment"]
    assert int(mix_axis[0].split(".")[1]) == len(augment) - 1  # the mix is the last step: after crop (and flip)
    if name == "cpu.yaml":
        assert augment[0]["name"] == "random_crop"
        assert spec["seeds"]["replicates"] >= 3
        return
    # the authors' code: normalize, then crop with zero padding (the mean colour), flip, mix; noisy σ = 0.025
    assert augment[:3] == ["normalize", {"name": "random_crop", "padding": 4}, "hflip"]
    assert arms[METHODS.index("noisy_mixup")] == {"name": "noisy_mixup", "sigma": 0.025}
    base = spec["base"]
    assert base["model"] == "preact_resnet18" and base["batch_size"] == 128
    assert base["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    assert base["schedule"] == {"name": "piecewise", "boundaries_steps": [400, 32000, 48000, 70000],
                                "factors": [0.1, 1, 0.1, 0.01, 0.001]}
    wd = dict(zip(spec["zip"]["label"], spec["zip"]["weight_decay.value"]))
    mixed = {wd[m] for m in METHODS[1:]}
    assert (wd["baseline"], mixed) == ((5e-4, {1e-4}) if name.startswith("cifar10_") or name == "cifar10.yaml"
                                       else (5e-4, {5e-4}))
    if name.endswith("_screen.yaml"):
        assert (spec["seeds"]["replicates"], base["epochs"]) == (20, 3)
        assert base["record"]["checkpoints"] == {"final": True}
    else:
        assert base["epochs"] == 225
        assert base["init_from"]["select"] == {"metric": "batch.loss", "k": 3, "mode": "min"}
        assert base["init_from"]["epoch"] == 3
        assert spec["zip"]["init_from.run.label"] == list(METHODS)


@pytest.mark.slow  # 51 tiny screen runs and 340 + 51 validated ResNet variants: minutes on a shared CPU
def test_cifar_screen_and_continuation_validate_and_continue_each_arms_3_lowest_losses(fake_cifar10, tmp_path, capsys):
    data = ["--set", f"data.path={fake_cifar10}", "--max-artifact-gb", "50"]
    assert main(["validate", str(STUDIES / "cifar10_screen.yaml"), "--no-timing", *data]) == 0, capsys.readouterr().err
    # without a data path: one clear error naming the field, as the DeepOBS studies
    assert main(["validate", str(STUDIES / "cifar10_screen.yaml")]) == 2
    assert "base.data.path" in capsys.readouterr().err

    screen = tmp_path / "screen"
    small = [*data, "--set", "model=linear", "--set", "record.every_steps=1"]
    spec = _spec("cifar10_screen.yaml")
    spec["seeds"]["replicates"] = 3
    small_screen = tmp_path / "screen.yaml"
    small_screen.write_text(yaml.safe_dump(spec))
    assert main(["run", str(small_screen), "--out", str(screen), *small]) == 0, capsys.readouterr().err

    cont = STUDIES / "cifar10.yaml"
    overrides = ["data.path=" + str(fake_cifar10), "model=linear", f"init_from.study={screen}"]
    assert main(["validate", str(cont), "--no-timing", *[a for o in overrides for a in ("--set", o)]]) == 0, capsys.readouterr().err
    variants = expand(load_study(cont, overrides), str(cont), open_stored=ablab.load)
    assert len(variants) == 17 * 3

    metrics, runs = stored(screen)
    last = metrics[(metrics.split == "batch") & (metrics.name == "loss")].sort_values("step").groupby("run").value.last()
    runs = runs.assign(final_loss=runs.run.map(last))
    for method in METHODS:
        mine = [v for v in variants if v.label == method]
        want = runs[runs.label == method].nsmallest(3, "final_loss")
        assert [v.spec.init_from.run for v in mine] == want.run.tolist()  # rank order: lowest first
        assert [v.spec.seeds.model_dump(mode="json") for v in mine] == [runs.set_index("run").spec[r]["seeds"] for r in want.run]
        assert all(v.spec.augment[-1] == mine[0].spec.augment[-1] for v in mine)
        assert {v.origin["selection"]["pool"] for v in mine} == {3}


@pytest.mark.slow
def test_cpu_study_runs_one_epoch_one_seed_and_reports_every_arm(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["run", str(STUDIES / "cpu.yaml"), "--out", str(out), "--set", "epochs=1", "--set",
                 "seeds.replicates=1", "--report"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics, runs = stored(out)
    assert runs.label.tolist() == list(METHODS) and (runs.status == "done").all()
    assert [s["augment"][-1]["name"] for s in runs.spec] == list(METHODS)
    acc = metrics[(metrics.split == "test") & (metrics.name == "accuracy")]
    assert sorted(set(acc.epoch)) == [0, 1]
    report = out / "report"
    page = (report / "index.html").read_text()
    assert "Mixed-example augmentation" in page and "Rows vs columns" in page
    assert (report / "figures" / "mixing_examples.png").is_file()
    table = pd.read_csv(report / "tables" / "mixing.csv")
    assert sorted(table.method) == sorted(METHODS) and (table.n == 1).all()


@pytest.mark.parametrize("name", ["cifar10_screen.yaml", "cifar10.yaml", "cifar100_screen.yaml", "cifar100.yaml"])
def test_the_cifar_specs_pad_crops_with_the_training_sets_mean_colour(fake_cifar10, name):
    """normalize before random_crop (the authors' code): a padded pixel is the mean colour, not black."""
    import torch

    from padding import padded_raw_colours

    padded, mean_colour = padded_raw_colours(_spec(name)["base"], fake_cifar10)
    torch.testing.assert_close(padded, mean_colour, atol=1e-6, rtol=0)
    assert (padded > 0.05).all()  # not black
