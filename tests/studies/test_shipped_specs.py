"""Every shipped study validates; the CPU twins run end to end (one epoch) through the CLI."""

from pathlib import Path

import numpy as np
import pytest

from ablab.cli import main
from conftest import stored
from fileformats import make_images, write_cifar10_folder, write_cifar_batch
from obesity_csv import write_obesity_csv

ROOT = Path(__file__).resolve().parents[2]
# the seed 002 CIFAR mixing studies need a finished screen and a larger artifact limit: test_mixing_studies.py;
# studies/nondeterminism/ needs CIFAR-10 and MNIST files: tests/studies/test_nondeterminism_studies.py;
# studies/normalization/ needs CIFAR-100 and SVHN files: tests/studies/test_normalization_studies.py;
# studies/adversarial/ (seed 002 ch. 3) needs CIFAR and SVHN files: tests/studies/test_adversarial_studies.py
STUDIES = sorted(p for p in (ROOT / "studies").rglob("*.yaml")
                 if not (p.parent.name == "mixing" and p.stem != "cpu") and "nondeterminism" not in p.parts
                 and "normalization" not in p.parts and "adversarial" not in p.parts)
NEEDS_DATA = {"cifar10_3c3d", "cifar100_3c3d", "cifar100_allcnnc"}
NEEDS_CIFAR10 = {"reduce_cifar10"}  # other full-size CIFAR-10 studies (data path from the command line)
# post-hoc studies read a stored study; tests/studies/test_reduce_studies.py runs them after their sources
POST_HOC = {p.stem for p in STUDIES if "\nsource:" in p.read_text()}


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """Tiny CIFAR-10 and CIFAR-100 folders in the official pickle layout (not real images)."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    write_cifar10_folder(root / "c10", 30, rng)
    c100 = root / "c100" / "cifar-100-python"
    c100.mkdir(parents=True)
    for i, name in enumerate(["train", "test"]):
        n = 300 if name == "train" else 20  # 280 after the cut: one batch of 256 with drop_last
        write_cifar_batch(c100 / name, make_images(n, 3, 32, 10 + i),
                          {"fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": rng.integers(0, 20, n).tolist()})
    return {"cifar10": root / "c10", "cifar100": root / "c100"}


def test_there_are_shipped_studies():
    names = {p.stem for p in STUDIES}
    assert {"quickstart", *NEEDS_DATA, *(f"{n}_cpu" for n in NEEDS_DATA)} <= names


@pytest.mark.parametrize("spec", STUDIES, ids=[p.stem for p in STUDIES])
def test_shipped_study_validates(spec, fake_cifar, tmp_path, capsys):
    args = ["validate", str(spec), "--no-timing"]  # the step-time measurement is tested on tiny studies
    if spec.stem == "obesity_grid":
        csv = write_obesity_csv(tmp_path / "ObesityDataSet_raw_and_data_sinthetic.csv")
        args += ["--set", f"data.path={csv}"]
    if spec.stem in POST_HOC:
        pytest.skip("a post-hoc study needs its stored source study")
    if spec.stem in NEEDS_DATA:
        data = fake_cifar["cifar10" if spec.stem.startswith("cifar10_") else "cifar100"]
        args += ["--set", f"data.path={data}", "--set", "data.val_size=20"]
    if spec.stem in NEEDS_CIFAR10:
        args += ["--set", f"data.path={fake_cifar['cifar10']}"]
    assert main(args) == 0, capsys.readouterr().err
    head = spec.read_text().splitlines()[:12]
    assert head[0].startswith("# ") and any("Expected" in line for line in head), "header says what it reproduces and costs"


@pytest.mark.parametrize("name", sorted(NEEDS_DATA))
def test_full_size_study_without_data_path_is_a_clear_error(name, tmp_path, capsys):
    spec = ROOT / "studies" / "deepobs" / f"{name}.yaml"
    assert main(["run", str(spec), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{spec}: base.data.path" in err and "--set data.path=PATH" in err
    assert not (tmp_path / "r").exists()
    assert main(["run", str(spec), "--out", str(tmp_path / "r"), "--set", f"data.path={tmp_path / 'nope'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEEDS_DATA))
def test_cpu_twin_runs_one_epoch_and_reports(name, tmp_path, capsys):
    spec = ROOT / "studies" / "deepobs" / f"{name}_cpu.yaml"
    out = tmp_path / "r"
    code = main(["run", str(spec), "--out", str(out), "--set", "epochs=1", "--set", "seeds.replicates=1", "--report"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics, runs = stored(out)
    assert runs.status.tolist() == ["done"]
    acc = metrics[(metrics.split == "test") & (metrics.name == "accuracy")]
    assert acc.epoch.tolist() == [0, 1]
    assert (out / "report" / "index.html").exists() and "test.accuracy" in captured.out
