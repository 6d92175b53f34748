"""Issue 26: one label per variant, and bounded work before any refusal (runs counted before expanding,
checkpoints counted in closed form)."""

import pytest
import yaml

from ablab.cli import main
from ablab.errors import SpecError
from ablab.spec import Checkpoints, expand, load_study
from conftest import tiny_study


def _expand(write_study, study):
    path = write_study(study)
    return expand(load_study(path), str(path))


def test_two_variants_with_one_label_are_refused_naming_the_label_and_the_settings(write_study, capsys):
    study = tiny_study(zip={"label": ["a", "a"], "optimizer.lr": [0.1, 0.05]})
    with pytest.raises(SpecError, match="'a'") as err:
        _expand(write_study, study)
    assert "optimizer.lr" in err.value.message and "0.1" in err.value.message and "0.05" in err.value.message
    assert main(["validate", str(write_study(study))]) == 2
    assert capsys.readouterr().err.count("error:") == 1


def test_one_label_across_zip_groups_is_refused(write_study):
    study = tiny_study(zip=[{"label": ["a", "b"], "optimizer.lr": [0.1, 0.05]},
                            {"label": ["x", "x"], "batch_size": [8, 16]}])
    with pytest.raises(SpecError, match="batch_size"):
        _expand(write_study, study)


def test_replicates_of_one_variant_share_its_label(write_study):
    runs = _expand(write_study, tiny_study(zip={"label": ["a", "b"], "optimizer.lr": [0.1, 0.05]},
                                           seeds={"replicates": 3}))
    assert sorted(r.label for r in runs) == ["a"] * 3 + ["b"] * 3
