"""Table 5.5 studies (seed 002 §5.5): the full-size specs validate; the CPU companion runs end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ablab.cli import main
from ablab.spec import load_study
from ablab.store import Store
from fileformats import write_cifar10_folder

FOLDER = Path(__file__).resolve().parents[2] / "studies" / "nondeterminism"


@pytest.fixture(scope="module")
def fake_cifar10(tmp_path_factory):
    return write_cifar10_folder(tmp_path_factory.mktemp("c10"), 20, np.random.default_rng(0))


def test_the_full_size_training_spec_validates_with_its_data_path(fake_cifar10, capsys):
    assert main(["validate", str(FOLDER / "reduce_cifar10.yaml"), "--no-timing", "--set", f"data.path={fake_cifar10}"]) == 0
    assert "200 runs" in capsys.readouterr().out
    study = load_study(FOLDER / "reduce_cifar10.yaml", [f"data.path={fake_cifar10}"])
    assert study.base["model"] == "resnet14" and study.base["epochs"] == 500 and study.seeds.replicates == 100


@pytest.mark.parametrize("name, members", [("reduce_cifar10_ensembles", [{"groups": n} for n in (2, 3, 4, 5)]),
                                           ("reduce_cifar10_snapshots", ["snapshots"])])
def test_the_full_size_post_hoc_specs_read_the_training_study(name, members):
    study = load_study(FOLDER / f"{name}.yaml")
    assert study.source.study == "results/reduce_cifar10"
    assert [k if isinstance(k, str) else k.model_dump() for k in study.unit_kinds] == members
    assert any((e if isinstance(e, str) else e["name"]) == "ensemble" for e in study.base["evaluators"])


def _quick(name: str, tmp: Path) -> Path:
    """The CPU study with 2 replicates, one epoch per snapshot cycle and 4 epochs for the single runs."""
    study = yaml.safe_load((FOLDER / f"{name}.yaml").read_text())
    if name == "reduce_cpu":
        study["seeds"]["replicates"] = 2
        study["base"]["epochs"] = 4
        study["zip"]["schedule"][1]["warmup_epochs"] = 0.5
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_the_cpu_study_and_its_post_hoc_studies_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("reduce_cpu", "reduce_cpu_ens2", "reduce_cpu_snapshots"):
        assert main(["run", str(_quick(name, tmp_path)), "--out", f"results/{name}", "--workers", "2"]) == 0, name
    src = Store.open("results/reduce_cpu")
    ens = Store.open("results/reduce_cpu_ens2")
    snap = Store.open("results/reduce_cpu_snapshots")
    try:
        runs = src.runs()
        single = runs[runs.label == "single"].run.tolist()
        snaps = runs[runs.label == "snapshot"].run.tolist()
        assert all(src.checkpoint_epochs(r) == [1, 2, 3, 4] for r in snaps)  # 4 snapshots each
        # single runs store plain and crop-TTA logits
        assert {"predictions", "tta_crop_predictions"} <= set(src.artifacts(single[0]).kind)
        # the pair ensemble's stored logits are the mean of its two members' stored logits
        unit = ens.runs().iloc[0]
        members = [m["run"] for m in unit.spec["members"]]
        want = np.mean([src.load_predictions(m) for m in members], axis=0)
        np.testing.assert_allclose(ens.load_predictions(unit.run), want, rtol=1e-5, atol=1e-6)
        y = torch.as_tensor(want).argmax(1)
        acc = ens.metrics().query("name == 'ensemble_accuracy'").value.iloc[0]
        labels = _test_labels()
        assert acc == pytest.approx((y == labels).double().mean().item(), abs=1e-12)
        # one snapshot unit per snapshot run, its members the run's 4 cycle ends, stored at the last one
        sruns = snap.runs()
        assert len(sruns) == 2 and sorted(m["run"] for s in sruns.spec for m in s["members"][:1]) == sorted(snaps)
        assert all([m["epoch"] for m in s["members"]] == [1, 2, 3, 4] for s in sruns.spec)
        assert set(snap.metrics().epoch) == {4}
        assert {"predictions", "tta_crop_predictions"} <= set(snap.artifacts(sruns.run.iloc[0]).kind)
    finally:
        for s in (src, ens, snap):
            s.close()


def _test_labels() -> torch.Tensor:
    from ablab.registry import DATASETS

    return DATASETS.create("digits").splits["test"].y


def test_an_ensemble_larger_than_the_runs_is_one_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study = yaml.safe_load((FOLDER / "reduce_cpu.yaml").read_text())
    study["seeds"]["replicates"] = 1
    study["base"]["epochs"] = 4
    study["zip"] = {"label": ["single"], "record.checkpoints": [{"final": True}]}
    study["report"]["metrics"] = ["test.accuracy"]  # no TTA evaluator in this one-variant source
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", "s.yaml", "--out", "results/reduce_cpu"]) == 0
    assert main(["run", str(_quick("reduce_cpu_ens2", tmp_path)), "--out", "ens"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "groups of 2 need at least 2 runs; the source has 1" in err, err
    assert not (tmp_path / "ens").exists()
