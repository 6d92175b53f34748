"""studies/normalization/ (seed 002 ch. 4): every training spec validates on small fake CIFAR-100 and SVHN files
(data paths from the command line) and holds the seed's design; the CPU study runs one epoch with its report."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from ablab.cli import main
from ablab.spec import expand, load_study
from conftest import stored
from fileformats import make_images, write_cifar_batch, write_svhn_mat

FOLDER = Path(__file__).resolve().parents[2] / "studies" / "normalization"
SPECS = sorted(FOLDER.glob("*.yaml"))
TRAINING = [p for p in SPECS if "source" not in yaml.safe_load(p.read_text())]
FULL_SIZE = [p for p in TRAINING if not p.stem.startswith("cpu")]


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> dict[str, Path]:
    """Tiny CIFAR-100 (pickle) and SVHN (.mat, with extra) folders: random images, not real data."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    c100 = root / "c100" / "cifar-100-python"
    c100.mkdir(parents=True)
    for i, (name, n) in enumerate([("train", 400), ("test", 20)]):
        fine = rng.integers(0, 100, n)
        write_cifar_batch(c100 / name, make_images(n, 3, 32, 10 + i), {"fine_labels": fine.tolist(),
                                                                        "coarse_labels": (fine // 5).tolist()})
    svhn = root / "svhn"
    svhn.mkdir()
    for i, (name, n) in enumerate([("train", 200), ("extra", 200), ("test", 20)]):
        write_svhn_mat(svhn / f"{name}_32x32.mat", make_images(n, 3, 32, 20 + i), rng.integers(0, 10, n))
    return {"cifar100": root / "c100", "svhn": svhn}


def _args(spec: Path, fake_data) -> list[str]:
    data = yaml.safe_load(spec.read_text())["base"]["data"]
    name = data if isinstance(data, str) else data["name"]
    return ["--set", f"data.path={fake_data[name]}", "--set", "data.val_size=20"] if name in fake_data else []


def test_the_folder_holds_the_studies_of_the_issue():
    assert {"cpu", "cpu_alpha", "cifar100_ghost_alpha", "svhn_ghost_alpha", "cifar100_non_iid_alpha", "cifar100_ghost", "svhn_ghost", "cifar100_non_iid", "cifar100_batch_size",
            "cifar100_wd_gamma_beta"} <= {p.stem for p in SPECS}


@pytest.mark.parametrize("spec", TRAINING, ids=[p.stem for p in TRAINING])
def test_every_training_spec_validates_and_states_its_result(spec, fake_data, capsys):
    assert main(["validate", str(spec), "--no-timing", *_args(spec, fake_data)]) == 0, capsys.readouterr().err
    head = spec.read_text().split("\nname:")[0]
    assert head.startswith("# ") and "Expected" in head and "seed 002" in head
    if spec in FULL_SIZE:
        assert "--set data.path=" in head and "ours" in head  # hyperparameters the seed does not give are labelled


def _variants(name: str, fake_data) -> list:
    spec = FOLDER / f"{name}.yaml"
    return [v for v in expand(load_study(spec, _args(spec, fake_data)[1::2]))]


def test_the_full_size_specs_use_the_seeds_models_and_splits(fake_data):
    for spec in FULL_SIZE:
        base = yaml.safe_load(spec.read_text())["base"]
        assert base["model"]["name"] == "resnet18", spec.stem  # 64/128/256/512 filters (§4.4.1)
        data = base["data"]
        if data["name"] == "cifar100":
            assert data["val_size"] == 10_000  # 40k train / 10k val
        else:
            assert data == {"name": "svhn", "extra": True, "val_size": round(0.2 * 604_388)}  # 80/20 of non-test


def test_the_non_iid_spec_is_table_4_1(fake_data):
    variants = _variants("cifar100_non_iid", fake_data)
    assert {v.spec.sampler["name"] for v in variants} == {"non_iid"}
    assert {v.spec.sampler["k"] for v in variants} == {4} and {v.spec.batch_size for v in variants} == {128}
    rows = sorted({(v.spec.model["norm"]["name"], v.spec.model["norm"].get("ghost_size") or
                    v.spec.model["norm"].get("examples")) for v in variants}, key=str)
    assert rows == sorted([("batchnorm", None), ("batch_renorm", None), ("batch_group_norm", 2),
                           *[("ghost_batchnorm", b) for b in (64, 32, 16, 8, 4, 2)]], key=str)


def test_the_batch_size_sweep_covers_1_to_128_for_each_method(fake_data):
    variants = _variants("cifar100_batch_size", fake_data)
    by_method: dict[str, set] = {}
    for v in variants:
        by_method.setdefault(v.label.rsplit("_b", 1)[0], set()).add(v.spec.batch_size)
        assert v.spec.optimizer["lr"] == pytest.approx(0.1 * v.spec.batch_size / 128)  # linear scaling (ours)
    assert by_method == {m: {1, 2, 4, 8, 16, 32, 64, 128} for m in ("batch_norm", "group_norm", "combined")}


def test_the_weight_decay_spec_has_10_runs_per_rule_at_one_global_decay(fake_data):
    variants = _variants("cifar100_wd_gamma_beta", fake_data)
    rules: dict[str, int] = {}
    for v in variants:
        rules[v.spec.weight_decay.params] = rules.get(v.spec.weight_decay.params, 0) + 1
        assert v.spec.weight_decay.value == 5e-4
    assert rules == {"exclude_norm": 10, "all": 10, "gamma_to_one": 10}


def test_the_ghost_specs_sweep_b_prime_and_keep_checkpoints(fake_data):
    for name in ("cifar100_ghost", "svhn_ghost"):
        variants = _variants(name, fake_data)
        ghosts = {v.spec.model["norm"].get("ghost_size") for v in variants if v.spec.model["norm"]["name"] ==
                  "ghost_batchnorm"}
        assert ghosts == {64, 32, 16, 8, 4, 2} and all(v.spec.record.checkpoints.final for v in variants)


def test_the_alpha_sweep_reads_the_cpu_study():
    study = load_study(FOLDER / "cpu_alpha.yaml")
    assert study.source.study == "results/normalization_cpu" and study.source.checkpoint == "final"
    assert study.grid["evaluators.0.alpha"][0] == 0.0 and study.grid["evaluators.0.alpha"][-1] == 1.0
    assert study.base["eval_splits"] == ["val", "test"]  # α tuned on val, applied on test (Table 4.1)


@pytest.mark.parametrize("name", ["cifar100_ghost", "svhn_ghost", "cifar100_non_iid"])
def test_the_full_size_alpha_sweeps_read_their_training_studies(name):
    study = load_study(FOLDER / f"{name}_alpha.yaml")
    assert study.source.study == f"results/normalization_{name}"
    source = yaml.safe_load((FOLDER / f"{name}.yaml").read_text())
    assert source["name"] == f"normalization_{name}" and source["base"]["record"]["checkpoints"]["final"]
    alphas = study.grid["evaluators.0.alpha"]
    assert alphas[0] == 0.0 and alphas[-1] == 1.0 and alphas == sorted(alphas)
    assert study.base["eval_splits"] == ["val", "test"]


@pytest.mark.slow
def test_cpu_study_and_its_alpha_sweep_run_with_their_reports(tmp_path, monkeypatch, capsys):
    """CI: the CPU study for one epoch (one seed) with its report, then the α sweep over its checkpoints."""
    monkeypatch.chdir(tmp_path)
    out = Path("results/normalization_cpu")
    code = main(["run", str(FOLDER / "cpu.yaml"), "--out", str(out), "--set", "epochs=1", "--set",
                 "seeds.replicates=1", "--workers", "2", "--report"])
    assert code == 0, capsys.readouterr().err
    metrics, runs = stored(out)
    assert set(runs.status) == {"done"} and len(runs) == 8
    acc = metrics[(metrics.split == "test") & (metrics.name == "accuracy")]
    assert sorted(set(acc.epoch)) == [0, 1]
    assert (out / "report" / "index.html").exists()
    code = main(["run", str(FOLDER / "cpu_alpha.yaml"), "--workers", "2", "--report"])
    assert code == 0, capsys.readouterr().err
    metrics, units = stored(Path("results/normalization_cpu_alpha"))
    assert set(units.status) == {"done"} and len(units) == 8 * 7
    assert set(metrics[metrics.name == "weighed_accuracy"].split) == {"val", "test"}
    page = (Path("results/normalization_cpu_alpha") / "report" / "index.html").read_text()
    assert "Inference example weighing" in page
