"""Which way a metric is better comes from its evaluator's declaration, not from its name."""

import pandas as pd

from ablab.analysis.seeds import describe_selection, higher_is_better, select_final


def test_a_declared_direction_wins_over_the_name():
    assert higher_is_better("test.disagreement")  # the name alone suggests "higher is better" ...
    assert not higher_is_better("test.disagreement", {"disagreement": "min"})  # ... its evaluator says min
    assert higher_is_better("test.loss", {"loss": "max"})
    assert not higher_is_better("test.loss", {"accuracy": "max"})  # undeclared: the name decides


def test_best_epoch_selection_follows_the_declaration():
    metrics = pd.DataFrame({
        "run": ["r"] * 3, "step": [0, 10, 20], "epoch": [0, 1, 2], "split": ["test"] * 3,
        "name": ["disagreement"] * 3, "value": [0.9, 0.2, 0.5]})
    runs = pd.DataFrame({"run": ["r"], "label": ["a"], "replicate": [0], "status": ["done"]})
    declared = {"disagreement": "min"}
    assert select_final(metrics, runs, "best", "test.disagreement", declared).epoch.item() == 1
    assert select_final(metrics, runs, "best", "test.disagreement").epoch.item() == 2  # the name's guess: max
    assert describe_selection("best", "test.disagreement", declared).endswith("(lowest)")


def test_a_stored_study_declares_the_directions_of_its_metrics(tmp_path, write_study):
    from ablab.cli import main
    from ablab.report.context import ReportContext
    from ablab.store import Store
    from conftest import tiny_study

    study = tiny_study(seeds={"replicates": 1})
    study["base"]["record"]["evaluators"] = ["standard", {"name": "sharpness", "batches": 1, "hessian_iters": 0}]
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 0
    store = Store.open(out)
    try:
        declared = ReportContext(store, out / "report").directions
    finally:
        store.close()
    assert declared == {"loss": "min", "accuracy": "max", "sam_sharpness": "min", "hessian_top_eigenvalue": "min"}
