"""The accuracy-against-label-smoothing section (seed 002 Fig. 3.2 left) against the stored numbers."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import yaml

from ablab.cli import main
from conftest import TINY_BASE, stored


def test_points_are_the_mean_and_sd_of_the_clean_training_runs_per_strength(tmp_path):
    base = {**copy.deepcopy(TINY_BASE), "epochs": 1, "augment": ["normalize"], "loss": "cross_entropy",
            "record": {"every_steps": 5, "eval_splits": ["test"], "evaluators": [
                "standard", {"name": "robust", "attack": {"name": "fgsm", "eps": 0.1}}]}}
    study = {"name": "ls", "base": base, "seeds": {"replicates": 2},
             "zip": {"label": ["s0", "s3", "s6", "pgd"], "loss.smoothing": [0.0, 0.3, 0.6, 0.3],
                     "objective": ["standard", "standard", "standard",
                                   {"name": "adversarial", "attack": {"name": "fgsm", "eps": 0.1}}]}}
    (tmp_path / "ls.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(tmp_path / "ls.yaml"), "--out", str(tmp_path / "r"), "--threads", "1", "--report"]) == 0
    metrics, runs = stored(tmp_path / "r")
    page = (tmp_path / "r" / "report" / "index.html").read_text()
    assert "Accuracy against label smoothing" in page
    assert (tmp_path / "r" / "report" / "figures" / "accuracy_vs_smoothing.png").is_file()
    table = pd.read_csv(tmp_path / "r" / "report" / "tables" / "accuracy_vs_smoothing.csv")
    assert sorted(table.s.unique()) == [0.0, 0.3, 0.6]  # the adversarial run at s = 0.3 is not clean training
    final = metrics[(metrics.split == "test") & (metrics.epoch == 1)]
    for label, s in (("s0", 0.0), ("s3", 0.3), ("s6", 0.6)):
        ids = runs[runs.label == label].run
        for metric in ("accuracy", "fgsm_accuracy"):
            values = final[final.run.isin(ids) & (final.name == metric)].value.to_numpy()
            row = table[(table.s == s) & (table.metric == f"test.{metric}")].iloc[0]
            assert row.n == 2 == len(values)
            np.testing.assert_allclose([row["mean"], row["sd"]], [values.mean(), values.std(ddof=1)], rtol=1e-12)


def test_a_study_without_a_smoothing_sweep_has_no_such_section(tmp_path):
    study = {"name": "plain", "base": {**copy.deepcopy(TINY_BASE), "epochs": 1}, "seeds": {"replicates": 1}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "r"), "--threads", "1", "--report"]) == 0
    assert "Accuracy against label smoothing" not in (tmp_path / "r" / "report" / "index.html").read_text()
