"""Validation refuses `augment` orders that make no sense, naming the steps; `insist: [augment_order]` runs them."""

import copy

import pytest
import yaml

from ablab.cli import main
from conftest import TINY_BASE


def _write(tmp_path, augment, **extra):
    base = {**copy.deepcopy(TINY_BASE), "augment": augment}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", "base": base, **extra}))
    return str(tmp_path / "s.yaml")


@pytest.mark.parametrize("augment, message", [
    (["mixup", {"name": "random_crop", "padding": 1}],
     "augment.0 'mixup' mixes images before augment.1 'random_crop' crops or flips them: list the mix after every "
     "crop and flip (seed 002 §2.4.1), or set 'insist: [augment_order]'"),
    (["normalize", {"name": "random_crop", "padding": 1}, {"name": "vh_mixup", "alpha": 0.5}, "hflip"],
     "augment.2 'vh_mixup' mixes images before augment.3 'hflip' crops or flips them"),
    (["normalize", {"name": "color_jitter", "brightness": 0.2}],
     "augment.1 'color_jitter' changes colours after augment.0 'normalize': it expects pixels in [0, 1]; list it "
     "before normalize, or set 'insist: [augment_order]'"),
])
def test_a_senseless_order_is_one_error_naming_the_steps_and_insist_runs_it(tmp_path, capsys, augment, message):
    path = _write(tmp_path, augment)
    assert main(["validate", path, "--no-timing"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{path}: base.augment: {message}" in err, err
    assert main(["run", path, "--out", str(tmp_path / "r")]) == 2 and not (tmp_path / "r").exists()
    capsys.readouterr()
    path = _write(tmp_path, augment, insist=["augment_order"])
    assert main(["validate", path, "--no-timing"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("augment", [
    ["normalize", {"name": "random_crop", "padding": 1}, "hflip", "mixup"],  # the authors' mixing order
    [{"name": "random_crop", "padding": 1}, "hflip", "normalize", "random_rows"],
    [{"name": "color_jitter", "brightness": 0.2}, "normalize", "baseline"],
    ["baseline", {"name": "random_crop", "padding": 1}],  # the baseline arm mixes nothing
    ["mixup", {"name": "random_crop", "padding": 0}],  # no padding: no crop
])
def test_orders_that_make_sense_validate(tmp_path, capsys, augment):
    assert main(["validate", _write(tmp_path, augment), "--no-timing"]) == 0, capsys.readouterr().err


def test_insist_names_only_known_rules(tmp_path, capsys):
    assert main(["validate", _write(tmp_path, ["normalize"], insist=["everything"]), "--no-timing"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "insist" in err and "augment_order" in err, err
