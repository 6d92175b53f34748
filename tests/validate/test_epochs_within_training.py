"""Issue 26: checkpoint and evaluator epochs after the end of training would save nothing: refused at
validation, naming the field and the run's last epoch (its duration in epochs, steps or a budget)."""

import pytest

from ablab.cli import main
from conftest import tiny_study


def _study(duration: dict, record: dict) -> dict:
    study = tiny_study(seeds={"replicates": 1})
    base = study["base"]
    del base["epochs"]
    base.update(duration)
    base["record"].update(record)
    return study


# digits: 1257 training examples, batch 128 -> 10 steps an epoch
@pytest.mark.parametrize("duration, last", [({"epochs": 3}, 3), ({"steps": 25}, 3), ({"budget_epochs": 2}, 2)])
def test_a_checkpoint_after_the_last_epoch_is_refused(write_study, capsys, duration, last):
    assert main(["validate", str(write_study(_study(duration, {"checkpoints": {"epochs": [1, last + 1]}})))]) == 2
    err = capsys.readouterr().err
    assert "base.record.checkpoints.epochs" in err and f"last epoch {last}" in err and err.count("error:") == 1
    assert main(["validate", str(write_study(_study(duration, {"checkpoints": {"epochs": [0, last]}})))]) == 0


def test_a_prediction_epoch_after_the_last_epoch_is_refused(write_study, capsys):
    evaluators = ["standard", {"name": "predictions", "epochs": [1, 9]}]
    assert main(["validate", str(write_study(_study({"epochs": 3}, {"evaluators": evaluators})))]) == 2
    err = capsys.readouterr().err
    assert "base.record.evaluators.1.epochs" in err and "last epoch 3" in err and err.count("error:") == 1


def test_a_continued_run_counts_its_epochs_from_the_start_of_its_source(write_study, capsys):
    """``epochs`` of a continued run are the total: a checkpoint at epoch 5 of a run continued at 2 for 6 is saved."""
    study = tiny_study(seeds={"replicates": 1}, zip={"label": ["trunk", "branch"], "epochs": [2, 6],
                                                     "init_from": [None, {"run": {"label": "trunk"}, "epoch": 2}],
                                                     "record.checkpoints": [{"final": True}, {"epochs": [5]}]})
    assert main(["validate", str(write_study(study))]) == 0, capsys.readouterr().err
    study["zip"]["record.checkpoints"][1] = {"epochs": [7]}
    assert main(["validate", str(write_study(study))]) == 2
    err = capsys.readouterr().err
    assert "last epoch 6" in err and "branch" in err
