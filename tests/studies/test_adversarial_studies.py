"""The seed 002 ch. 3 studies (studies/adversarial/): the full-size specs hold the seed's protocol and validate
on fake data; the CPU study and its transfer study run (one epoch, one seed) through the CLI with their reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ablab.cli import main
from ablab.spec import expand, load_study
from conftest import stored
from fileformats import make_images, write_cifar10_folder, write_cifar_batch, write_svhn_mat

FOLDER = Path(__file__).resolve().parents[2] / "studies" / "adversarial"
FULL = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn"}
METHODS = ["regular", "label_smoothing", "pgd", "alp", "lrm"]


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """Small CIFAR-10, CIFAR-100 and SVHN folders in their official layouts (not real images), with the 1,000
    test images the robust evaluators' subsamples need."""
    root = tmp_path_factory.mktemp("adv")
    rng = np.random.default_rng(0)
    write_cifar10_folder(root / "c10", 1000, rng)
    c100 = root / "c100" / "cifar-100-python"
    c100.mkdir(parents=True)
    for i, (name, n) in enumerate([("train", 40), ("test", 1000)]):
        write_cifar_batch(c100 / name, make_images(n, 3, 32, 10 + i),
                          {"fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": rng.integers(0, 20, n).tolist()})
    (root / "svhn").mkdir()
    for name, n in (("train", 20), ("test", 1000), ("extra", 20)):
        write_svhn_mat(root / "svhn" / f"{name}_32x32.mat", make_images(n, 3, 32, 7),
                       rng.integers(0, 10, n))
    return {"cifar10": root / "c10", "cifar100": root / "c100", "svhn": root / "svhn"}


def _spec(name: str) -> dict:
    return yaml.safe_load((FOLDER / f"{name}.yaml").read_text())


def _arms(spec: dict) -> dict[str, dict]:
    """label -> the zip's values of that arm."""
    zipped = spec["zip"]
    return {label: {k: v[i] for k, v in zipped.items() if k != "label"} for i, label in enumerate(zipped["label"])}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_the_cifar_specs_hold_the_seeds_protocol(name):
    spec, base = _spec(name), _spec(name)["base"]
    arms = _arms(spec)
    assert list(arms) == METHODS and spec["seeds"]["replicates"] >= 2
    assert base["weight_decay"] == {"value": 0.0002, "mode": "l2"} and base["batch_size"] == 128
    assert base["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    assert base["schedule"] == {"name": "step", "milestones_epochs": [100, 150], "gamma": 0.1, "warmup_epochs": 5}
    assert [arms[m]["epochs"] for m in METHODS] == [200, 200, 101, 101, 101]  # 200 plain, 101 adversarial
    assert all("hflip" in arm["augment"] and arm["augment"][-1] == "normalize" for arm in arms.values())
    assert "vh_mixup" in arms["lrm"]["augment"] and arms["lrm"]["loss.smoothing"] == 0.1
    pgd = arms["pgd"]["objective"]["attack"]
    assert (pgd["eps"], pgd["step"], arms["pgd"]["objective"].get("alpha", 0.0)) == (0.03, 0.0078, 0.0)
    lrm = arms["lrm"]["objective"]
    want = {"cifar10": (0.5, 0.125, 0.001), "cifar100": (5.0, 0.95, 0.00003)}[name]
    assert (arms["alp"]["objective"]["weight"], lrm["ratio"], lrm["beta"]) == want


def test_the_svhn_spec_holds_the_seeds_protocol():
    spec = _spec("svhn")
    base, arms = spec["base"], _arms(spec)
    assert list(arms) == METHODS and base["model"] == "resnet8" and base["epochs"] == 101
    assert base["data"]["extra"] is True  # 604,388 training images
    assert base["schedule"] == {"name": "piecewise", "boundaries_epochs": [5, 80], "factors": [0.1, 1, 0.1]}
    assert base["optimizer"]["lr"] == 0.01  # .001 → .01 → .001
    assert all("hflip" not in arm["augment"] for arm in arms.values())  # no flips on digits
    attack = arms["pgd"]["objective"]["attack"]
    assert (attack["eps"], attack["step"]) == pytest.approx((12 / 255, 3 / 255))
    lrm = arms["lrm"]["objective"]
    assert (arms["lrm"]["loss.smoothing"], lrm["ratio"], lrm["beta"]) == (0.2, 0.95, 0.0001)
    assert "mixup" in arms["lrm"]["augment"]


@pytest.mark.parametrize("name", list(FULL))
def test_the_full_size_specs_validate_with_a_data_path_and_refuse_without(name, fake_data, tmp_path, capsys):
    path = FOLDER / f"{name}.yaml"
    args = ["--set", f"data.path={fake_data[FULL[name]]}"]
    assert main(["validate", str(path), "--no-timing", *args]) == 0, capsys.readouterr().err
    variants = expand(load_study(path, [f"data.path={fake_data[FULL[name]]}"]), str(path))
    assert len(variants) == 5 * _spec(name)["seeds"]["replicates"]
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert f"{path}: base.data.path" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["transfer_cifar10", "transfer_cifar100", "transfer_cpu"])
def test_the_transfer_specs_pair_every_stored_run_with_pgd10(name):
    spec = _spec(name)
    assert spec["members"] == "pairs" and spec["source"]["checkpoint"] == "final"
    (ev,) = spec["base"]["evaluators"]
    assert ev["name"] == "transfer" and ev["attack"]["steps"] == 10
    header = (FOLDER / f"{name}.yaml").read_text().splitlines()[0]
    assert header.startswith("# Black-box transfer")


def test_the_cpu_study_has_every_method_3_seeds_and_an_s_sweep():
    spec = _spec("cpu")
    arms = _arms(spec)
    assert spec["seeds"]["replicates"] >= 3
    names = {a["objective"] if isinstance(a["objective"], str) else a["objective"]["name"] for a in arms.values()}
    assert names == {"standard", "adversarial", "logit_squeezing", "alp", "decoupled_alp"}
    sweep = sorted(a["loss.smoothing"] for a in arms.values() if a["objective"] == "standard")
    assert sweep == [0.0, 0.1, 0.3, 0.5, 0.75]
    assert "vh_mixup" in arms["lrm"]["augment"] and arms["lrm"]["objective"]["name"] == "decoupled_alp"
    assert arms["pgd_squeeze"]["objective"]["squeeze"] > 0
    kept = [label for label, a in arms.items() if a["record.checkpoints.final"]]
    assert kept == ["regular", "ls_0.5", "pgd", "alp", "lrm"]  # the transfer study's sources (Table 3.2's methods)


@pytest.mark.slow  # 11 arms × 1 epoch with FGSM/PGD evaluation, then 20 transfer pairs: about a minute
def test_cpu_study_and_its_transfer_study_run_one_epoch_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    one = ["--set", "epochs=1", "--set", "seeds.replicates=1", "--workers", "2"]
    assert main(["run", str(FOLDER / "cpu.yaml"), "--out", "results/adversarial_cpu", *one, "--report"]) == 0, \
        capsys.readouterr().err
    metrics, runs = stored(tmp_path / "results" / "adversarial_cpu")
    assert (runs.status == "done").all() and len(runs) == 11
    final = metrics[(metrics.split == "test") & (metrics.epoch == 1)]
    for name in ("accuracy", "fgsm_accuracy", "pgd10_accuracy", "pgd100_accuracy", "logit_range", "logit_variance"):
        assert len(final[final.name == name]) == 11, name
    report = tmp_path / "results" / "adversarial_cpu" / "report"
    page = (report / "index.html").read_text()
    assert "Adversarial robustness" in page and "Accuracy against label smoothing" in page
    assert (report / "figures" / "accuracy_vs_smoothing.png").is_file()
    curve = pd.read_csv(report / "tables" / "accuracy_vs_smoothing.csv")
    assert sorted(curve.s.unique()) == [0.0, 0.1, 0.3, 0.5, 0.75]

    assert main(["run", str(FOLDER / "transfer_cpu.yaml"), "--out", "results/transfer", "--workers", "2",
                 "--report"]) == 0, capsys.readouterr().err
    tmetrics, truns = stored(tmp_path / "results" / "transfer")
    assert len(truns) == 5 * 4 and (truns.status == "done").all()  # ordered pairs of the 5 kept runs
    assert len(tmetrics[tmetrics.name == "transfer_accuracy"]) == 20
