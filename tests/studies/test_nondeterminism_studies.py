"""studies/nondeterminism/: every training spec validates on small fake CIFAR-10 and MNIST files in the
official formats (data paths from the command line); the CPU study runs one epoch end to end."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from ablab.cli import main
from ablab.spec import expand, load_study
from conftest import stored
from fakestore import read_csv_exact
from fileformats import make_images, write_cifar10_folder, write_idx

FOLDER = Path(__file__).resolve().parents[2] / "studies" / "nondeterminism"
SPECS = sorted(FOLDER.glob("*.yaml"))
# post-hoc specs (``source:``) evaluate a stored study: their own tests run them after it
TRAINING = [p for p in SPECS if "source" not in yaml.safe_load(p.read_text())]


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> dict[str, Path]:
    """Tiny CIFAR-10 (pickle batches) and MNIST (idx) folders: random images, not real data."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    write_cifar10_folder(root / "cifar10", 20, rng)
    mnist = root / "mnist"
    mnist.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(mnist / f"{prefix}-images-idx3-ubyte", make_images(n, 1, 28, n)[:, 0])
        write_idx(mnist / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return {"cifar10": root / "cifar10", "mnist": mnist}


def test_the_folder_holds_the_studies_of_the_issue():
    assert {"cpu", "cpu_depth", "cifar10_sources", "cifar10_bitflip", "cifar10_depth", "onset_cifar10",
            "mnist"} <= {p.stem for p in SPECS}


@pytest.mark.parametrize("spec", TRAINING, ids=[p.stem for p in TRAINING])
def test_every_spec_validates_records_test_logits_and_states_its_result(spec, fake_data, monkeypatch, capsys):
    data = yaml.safe_load(spec.read_text())["base"]["data"]
    name = data if isinstance(data, str) else data["name"]
    extra = ["--set", f"data.path={fake_data[name]}"] if name in fake_data else []
    key = (spec, str(fake_data[name]) if name in fake_data else None)
    _keep_the_expansion(monkeypatch, key)
    assert main(["validate", str(spec), "--no-timing", *extra]) == 0, capsys.readouterr().err
    head = spec.read_text().split("\nname:")[0]
    assert head.startswith("# ") and "Expected" in head and "MEASURED" not in head
    if name in fake_data:
        assert "--set data.path=" in head
    for v in _expanded(*key):
        if v.spec.record.checkpoints.snapshots:  # a snapshot run is measured as its post-hoc ensemble's logits
            continue
        evaluators = v.spec.record.evaluators
        assert {"name": "predictions", "splits": ["test"], "epochs": "last"} in evaluators, v.label


_EXPANSIONS: dict[tuple[Path, str | None], tuple] = {}


def _keep_the_expansion(monkeypatch, key: tuple[Path, str | None]) -> None:
    """Keep the runs that ``ablab validate`` expands from the spec as ``_expanded(*key)``: a full-size
    study is expanded once, by the command under test, for all the tests that read its runs."""
    import ablab.spec

    real = ablab.spec.expand

    def expand(*args, **kwargs):
        variants = real(*args, **kwargs)
        _EXPANSIONS.setdefault(key, tuple(variants))
        return variants

    monkeypatch.setattr(ablab.spec, "expand", expand)


def _expanded(spec: Path, data: str | None) -> tuple:
    """The spec's runs, ``data.path`` set when given: expanded once for all the tests that read them
    (a full-size study of 2,100 runs takes seconds to expand)."""
    if (spec, data) not in _EXPANSIONS:
        _EXPANSIONS[spec, data] = tuple(expand(load_study(spec, overrides=[f"data.path={data}"] if data else [])))
    return _EXPANSIONS[spec, data]


def _sizes(name: str, data: Path) -> tuple[tuple, dict[str, int]]:
    variants = _expanded(FOLDER / f"{name}.yaml", str(data))
    sizes: dict[str, int] = {}
    for v in variants:
        sizes[v.label] = sizes.get(v.label, 0) + 1
    return variants, sizes


def test_full_size_studies_have_the_rows_of_the_tables(fake_data):
    c10 = fake_data["cifar10"]
    variants, sizes = _sizes("cifar10_sources", c10)
    assert sizes == {k: 100 for k in ["init", "shuffle", "augment", "kernels", "shuffle+kernels",
                                      "shuffle+augment+kernels", "all"]}
    kernels_off = {v.label for v in variants if not v.spec.deterministic}
    assert kernels_off == {"kernels", "shuffle+kernels", "shuffle+augment+kernels", "all"}
    assert all(v.spec.model["name"] == "resnet14" and v.spec.epochs == 500 for v in variants)
    variants, sizes = _sizes("cifar10_bitflip", c10)
    assert sizes == {"reference": 1, "bitflip": 100}
    assert sorted(v.spec.seeds.bitflip for v in variants if v.label == "bitflip") == list(range(100))
    variants, sizes = _sizes("cifar10_depth", c10)
    assert len(sizes) == 21 and set(sizes.values()) == {100}
    assert {v.spec.model["name"] for v in variants} == {"linear", "mlp", "one_hidden_conv", "resnet6", "resnet10",
                                                        "resnet14", "resnet18"}
    variants, sizes = _sizes("onset_cifar10", c10)
    assert sizes.pop("trunk") == 1 and len(sizes) == 18 and set(sizes.values()) == {100}
    onsets = {v.spec.init_from.epoch for v in variants if v.spec.init_from is not None}
    assert onsets == {0, 50, 250, 400, 450, 480, 490, 495, 498}
    _, sizes = _sizes("mnist", fake_data["mnist"])
    assert sizes == {"init": 100, "all": 100, "bitflip": 100}


@pytest.mark.slow
def test_cpu_study_runs_one_epoch(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["run", str(FOLDER / "cpu.yaml"), "--out", str(out), "--set", "epochs=1", "--workers", "2", "--report"])
    assert code == 0, capsys.readouterr().err
    metrics, runs = stored(out)
    assert len(runs) == 80 and set(runs.status) == {"done"}
    assert runs.groupby("label").size().to_dict() == {k: 16 for k in ["augment", "bitflip", "init", "kernels", "shuffle"]}
    kernels = runs[runs.label == "kernels"]
    assert all(i["kernels"] == {"deterministic": False, "has_effect": False} for i in kernels["info"])
    final = metrics[(metrics.split == "test") & (metrics.name == "loss") & (metrics.epoch == 1)].set_index("run").value
    assert final[kernels.run].nunique() == 1 and final[runs[runs.label == "init"].run].nunique() == 16
    # the report: Fig. 5.1 (CKA per layer per source), Fig. B.1 (loss spread of the bit change), kernels named idle
    cka = read_csv_exact(out / "report" / "tables" / "cka.csv")
    assert sorted(set(zip(cka["variant"], cka["layer"]))) == sorted(
        (v, layer) for v in ["augment", "bitflip", "init", "kernels", "shuffle"] for layer in ["conv0", "act0", "fc1"])
    assert (cka["n"] == 16).all() and (cka["examples"] == 100).all()
    by = cka.set_index(["variant", "layer"])["cka"]
    assert all(by["kernels", layer] == pytest.approx(1.0, abs=1e-9) for layer in ["conv0", "act0", "fc1"])
    assert all(0 < by["init", layer] < 1 - 1e-6 for layer in ["conv0", "act0", "fc1"])
    page = (out / "report" / "index.html").read_text()
    assert "Representation similarity (linear CKA)" in page and "figures/cka.png" in page
    assert "Loss spread of bit-changed runs" in page
    assert list(dict.fromkeys(read_csv_exact(out / "report" / "tables" / "loss_spread.csv")["variant"])) == ["bitflip"]
    variability = read_csv_exact(out / "report" / "tables" / "variability.csv").set_index("variant")
    assert variability["kernels_no_effect"].to_dict() == {
        "init": False, "shuffle": False, "augment": False, "bitflip": False, "kernels": True}
    assert variability.loc["kernels", "acc_sd"] == 0 and "zero variability is expected" in page


@pytest.mark.parametrize("name", ["cifar10_sources", "cifar10_bitflip", "cifar10_depth", "reduce_cifar10"])
def test_the_cifar_specs_pad_crops_black_as_the_authors_code(fake_data, name):
    """random_crop before normalize (the authors' torchvision pipeline: RandomCrop, then Normalize): black padding."""
    import torch

    from padding import padded_raw_colours

    padded, _ = padded_raw_colours(yaml.safe_load((FOLDER / f"{name}.yaml").read_text())["base"], fake_data["cifar10"])
    torch.testing.assert_close(padded, torch.zeros_like(padded), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["cifar10_sources", "cifar10_bitflip", "cifar10_depth", "onset_cifar10", "reduce_cifar10"])
def test_the_cifar_specs_give_biases_and_bn_the_authors_lr_multiplier(fake_data, name):
    """The authors' code trains biases and BN γ/β at 0.1× the lr (seed 002 ch. 5, their released code): every
    run of the full-size spec has an optimizer group at 0.1× holding exactly the ≤1-d parameters."""
    from ablab.spec import expand, load_study
    from ablab.train.build import build_run

    study = load_study(FOLDER / f"{name}.yaml", [f"data.path={fake_data['cifar10']}"])
    variants = expand(study)
    assert {tuple(v.spec.lr_multipliers.items()) for v in variants if hasattr(v.spec, "lr_multipliers")} == {
        (("bias_norm", 0.1),)}
    run = build_run(variants[0].spec)
    scaled = [p for g in run.optimizer.param_groups if g["lr_multiplier"] == 0.1 for p in g["params"]]
    assert {id(p) for p in scaled} == {id(p) for p in run.model.parameters() if p.ndim == 1} != set()
    assert "lr_multipliers: {bias_norm: 0.1}" in (FOLDER / f"{name}.yaml").read_text().split("\nname:")[0]
