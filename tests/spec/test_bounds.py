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


def _looped_count(c: Checkpoints, last_epoch: int, cycle_ends=()) -> int:
    """The count as it was: one ``due`` per epoch (the reference for small runs)."""
    return sum(c.due(e, last_epoch, cycle_ends) for e in range(last_epoch + 1))


@pytest.mark.parametrize("settings", [
    {}, {"final": True}, {"epochs": [0, 3, 5, 40]}, {"every_epochs": 1}, {"every_epochs": 3},
    {"every_epochs": 3, "final": True}, {"every_epochs": 2, "epochs": [0, 1, 2, 7, 12]},
    {"epochs": [4, 4, 6], "final": True}, {"snapshots": True}, {"snapshots": True, "every_epochs": 5, "final": True},
    {"snapshots": True, "epochs": [2, 9]},
])
def test_checkpoints_are_counted_in_closed_form_as_the_loop_counted_them(settings):
    c = Checkpoints(**settings)
    for last in range(0, 25):
        for ends in ((), [last], [e for e in (3, 6, 9, 12) if e <= last], [5, 10, 15, 20, 25]):
            assert c.count(last, ends) == _looped_count(c, last, ends), (settings, last, ends)


@pytest.mark.parametrize("duration", ["epochs: 1000000000000000000", "epochs: 1.0e+18",
                                      "epochs: 10000000000000000000000000", "steps: 1000000000000000"])
def test_a_run_of_a_huge_duration_validates_without_walking_its_epochs(write_study, capsys, duration):
    # a final checkpoint and every 1000th: counted, not enumerated (the artifacts are then too large)
    study = tiny_study(seeds={"replicates": 1})
    study["base"]["record"]["checkpoints"] = {"final": True, "every_epochs": 1000}
    text = yaml.safe_dump(study).replace("  epochs: 2\n", f"  {duration}\n")
    assert duration in text
    assert main(["validate", str(write_study(text))]) == 2
    err = capsys.readouterr().err
    assert "--max-artifact-gb" in err and err.count("error:") == 1


def _alias_grid(axes: int) -> str:
    """A study (2 replicates) whose grid crosses ``axes`` aliased ten-value axes: 10**axes combinations in a
    few lines (the axes are refused by their count before their paths are looked at)."""
    grid = "".join(f"  axis{i}: *ten\n" for i in range(1, axes))
    return yaml.safe_dump(tiny_study()) + "grid:\n  axis0: &ten [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + grid


def test_ten_million_combinations_are_refused_before_any_is_built(write_study, capsys, monkeypatch):
    from ablab.spec import expansion

    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        raise AssertionError("a run was built")

    monkeypatch.setattr(expansion, "_raw_run", spy)
    monkeypatch.setattr(expansion, "_axis_combinations", spy)
    assert main(["validate", str(write_study(_alias_grid(7)))]) == 2
    err = capsys.readouterr().err
    assert "20000000 runs" in err and "--max-runs" in err and err.count("error:") == 1
    assert calls == []


def test_max_runs_is_checked_before_expanding(write_study, capsys, monkeypatch):
    from ablab.spec import expansion

    monkeypatch.setattr(expansion, "_raw_run", lambda *a, **k: pytest.fail("a run was built"))
    assert main(["validate", str(write_study(_alias_grid(2))), "--max-runs", "199"]) == 2
    assert "200 runs" in capsys.readouterr().err


def test_a_replicates_axis_counts_each_variant_s_replicates(write_study):
    study = tiny_study(zip={"label": ["one", "three"], "seeds.replicates": [1, 3],
                                                          "batch_size": [8, 16]}, grid={"optimizer.lr": [0.1, 0.2]})
    path = write_study(study)
    assert len(expand(load_study(path), str(path))) == 2 * (1 + 3)
    with pytest.raises(SpecError, match="8 runs"):
        expand(load_study(path), str(path), max_runs=7)
