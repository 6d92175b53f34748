"""The generalization-boosts studies: the full grids validate; the CI grid runs and reports end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ablab.cli import main
from ablab.spec import RunSpec, expand, load_study
from ablab.train.loop import train
from conftest import stored
from obesity_csv import write_obesity_csv

BOOSTS = Path(__file__).resolve().parents[2] / "studies" / "boosts"


@pytest.fixture(scope="module")
def obesity_file(tmp_path_factory):
    return write_obesity_csv(tmp_path_factory.mktemp("obesity") / "ObesityDataSet_raw_and_data_sinthetic.csv")


def test_obesity_grid_validates_with_a_data_file(obesity_file, capsys):
    spec = BOOSTS / "obesity_grid.yaml"
    assert main(["validate", str(spec), "--set", f"data.path={obesity_file}"]) == 0, capsys.readouterr().err
    assert "576 runs = 192 variants × 3 replicates" in capsys.readouterr().out


def test_obesity_grid_without_a_data_file_is_a_clear_error(tmp_path, capsys):
    spec = BOOSTS / "obesity_grid.yaml"
    assert main(["run", str(spec), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "base.data.path" in err and "--set data.path=" in err and not (tmp_path / "r").exists()


def test_diabetes_grid_validates_and_has_the_slides_protocol(capsys):
    spec = BOOSTS / "diabetes_grid.yaml"
    assert main(["validate", str(spec)]) == 0, capsys.readouterr().err
    assert "576 runs = 192 variants × 3 replicates" in capsys.readouterr().out
    variants = expand(load_study(spec))
    plain = next(v.spec for v in variants if v.spec.objective["name"] == "standard")
    sam = next(v.spec for v in variants if v.spec.objective["name"] == "sam")
    assert plain.budget_epochs == sam.budget_epochs == 200 and plain.batch_size == 32
    assert plain.schedule["t_max_epochs"] == 100 and plain.loss["name"] == "mse"


def test_an_obesity_grid_run_trains(obesity_file):
    study = load_study(BOOSTS / "obesity_grid.yaml", [f"data.path={obesity_file}"])
    variant = next(v for v in expand(study) if v.spec.objective["name"] == "sam" and v.spec.optimizer["name"] == "adam")
    spec = RunSpec.model_validate({**variant.spec.model_dump(), "budget_epochs": 4, "device": "cpu"})
    result = train(spec)
    assert result.status == "done", result.error
    assert result.info["gradient_evaluations"] == 2 * result.info["steps"]
    names = {(split, name) for (_, _, split, name, _) in result.metrics}
    assert {("test", "mse"), ("train", "sam_sharpness"), ("train", "hessian_top_eigenvalue")} <= names


@pytest.mark.slow
def test_ci_grid_runs_and_reports_heatmaps_p_values_and_sharpness(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["run", str(BOOSTS / "ci_grid.yaml"), "--out", str(out), "--report"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    runs = stored(out)[1]
    assert len(runs) == 32 and set(runs["status"]) == {"done"}
    steps = {s["objective"]["name"] == "sam": (i["steps"], i["gradient_evaluations"]) for s, i in zip(runs["spec"], runs["info"])}
    assert steps[True][1] == steps[False][1] and steps[True][0] * 2 == steps[False][0]

    page = (out / "report" / "index.html").read_text()
    assert page.count('<table class="grid">') == 4  # optimizer × SAM facets
    assert page.count("class=\"cell best\"") == 4
    p_values = re.findall(r'<span class="p-value">([^<]+)</span>', page)
    assert len(p_values) == 2 and all(p == "n/a" or 0 <= float(p) <= 1 for p in p_values)
    assert (out / "report" / "figures" / "sharpness.png").stat().st_size > 1000
    assert '<img src="figures/sharpness.png"' in page
    for name in ("grid_0.csv", "grid_0.md", "grid_0.tex", "best.csv", "best.md", "best.tex"):
        assert (out / "report" / "tables" / name).is_file()
