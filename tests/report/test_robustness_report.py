"""The robustness, transfer and logit-histogram sections against the stored numbers (seed 002 Tables 3.1/3.2/3.6, Fig. 3.2)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from ablab.cli import main
from ablab.report.sections.robustness import robust_labels, table_refs
from ablab.report.sections.transfer import shade
from conftest import TINY_BASE, stored

PGD = {"name": "pgd", "eps": 0.1, "step": 0.03, "steps": 3, "random_start": False}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two variants × 2 seeds with FGSM, PGD-3, PGD-30 and logit_stats; then transfer over ordered pairs."""
    root = tmp_path_factory.mktemp("adv")
    base = {**copy.deepcopy(TINY_BASE), "epochs": 1, "augment": ["normalize"], "loss": "cross_entropy",
            "record": {"every_steps": 5, "eval_splits": ["test"], "checkpoints": {"final": True}, "evaluators": [
                "standard", {"name": "robust", "attack": {"name": "fgsm", "eps": 0.1}},
                {"name": "robust", "attack": PGD}, {"name": "robust", "attack": {**PGD, "steps": 30}, "examples": 40},
                {"name": "logit_stats", "attack": PGD, "examples": 60, "bins": 20, "limit": 20}]}}
    study = {"name": "adv", "base": base, "seeds": {"replicates": 2},
             "zip": {"label": ["regular", "smooth"], "loss.label_smoothing": [0.0, 0.3]},
             "report": {"baselines": {"lower": "regular"}}}
    (root / "adv.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(root / "adv.yaml"), "--out", str(root / "adv"), "--threads", "1"]) == 0
    transfer = {"name": "transfer", "members": "pairs", "source": {"study": str(root / "adv"), "checkpoint": "final"},
                "base": {"evaluators": [{"name": "transfer", "attack": PGD, "examples": 50}], "eval_splits": ["test"],
                         "device": "cpu"}}
    (root / "transfer.yaml").write_text(yaml.safe_dump(transfer))
    assert main(["run", str(root / "transfer.yaml"), "--out", str(root / "transfer"), "--threads", "1"]) == 0
    for name in ("adv", "transfer"):
        assert main(["report", str(root / name)]) == 0
    return root


def test_the_robustness_tables_hold_the_stored_means_sds_and_welch_p(studies):
    from scipy import stats

    metrics, runs = stored(studies / "adv")
    final = metrics[(metrics.split == "test") & (metrics.epoch == metrics.epoch.max())]
    wide = final.pivot_table(index="run", columns="name", values="value").join(runs.set_index("run").label)
    table = pd.read_csv(studies / "adv" / "report" / "tables" / "robustness.csv")
    assert [c for c in table.columns if c.endswith(".mean")] == [
        "test.accuracy.mean", "test.fgsm_accuracy.mean", "test.pgd3_accuracy.mean"]
    for row in table.itertuples():
        got = wide[wide.label == row.label]
        for col in ("accuracy", "fgsm_accuracy", "pgd3_accuracy"):
            assert table.loc[row.Index, f"test.{col}.mean"] == pytest.approx(got[col].mean(), abs=1e-12)
            assert table.loc[row.Index, f"test.{col}.sd"] == pytest.approx(got[col].std(ddof=1), abs=1e-12)
    smooth, regular = wide[wide.label == "smooth"].fgsm_accuracy, wide[wide.label == "regular"].fgsm_accuracy
    p = stats.ttest_ind(smooth, regular, equal_var=False).pvalue
    stored_p = table.set_index("label").loc["smooth", "test.fgsm_accuracy.p_lower"]
    assert (np.isnan(p) and np.isnan(stored_p)) or stored_p == pytest.approx(p)
    strongest = pd.read_csv(studies / "adv" / "report" / "tables" / "robustness_strongest.csv")
    assert [c for c in strongest.columns if c.endswith(".mean")] == ["test.pgd3_accuracy.mean",
                                                                     "test.pgd30_accuracy.mean"]
    page = (studies / "adv" / "report" / "index.html").read_text()
    assert "Adversarial robustness (white-box)" in page and "Table 3.6" in page
    assert "Logit histograms" in page and (studies / "adv" / "report" / "figures" / "logit_histograms.png").is_file()


def test_the_transfer_matrix_is_target_by_source_with_the_units_means(studies):
    metrics, runs = stored(studies / "transfer")
    assert len(runs) == 12 and set(runs.status) == {"done"}  # 4 runs: 12 ordered pairs
    value = metrics[metrics.name == "transfer_accuracy"].set_index("run").value
    by_pair: dict[tuple[str, str], list[float]] = {}
    for run, origin in zip(runs.run, runs.origin):
        source, target = (m.rsplit(" #", 1)[0] for m in origin["members"])
        by_pair.setdefault((target, source), []).append(value[run])
    cells = pd.read_csv(studies / "transfer" / "report" / "tables" / "transfer.csv")
    assert len(cells) == 4 and set(cells.n) == {2, 4}  # diagonal: 2 ordered pairs of one variant's 2 runs
    for row in cells.itertuples():
        assert row.mean == pytest.approx(np.mean(by_pair[(row.target, row.source)]), abs=1e-12)
    page = (studies / "transfer" / "report" / "index.html").read_text()
    assert "Black-box transfer" in page and "target \\ source" in page


def test_labels_tables_and_shades():
    cols = ["test.accuracy", "test.pgd20_accuracy", "test.pgd20_clean_accuracy", "test.fgsm_accuracy",
            "test.fgsm_clean_accuracy", "test.spsa_accuracy", "test.spsa_clean_accuracy", "test.pgd1000_accuracy",
            "test.pgd1000_clean_accuracy", "test.pgd5_accuracy", "test.pgd5_clean_accuracy", "test.other_accuracy"]
    labels = robust_labels(cols)
    assert labels == ["fgsm", "pgd5", "pgd20", "pgd1000", "spsa"]
    first, strong = table_refs(labels, True)
    assert first == ["test.accuracy", "test.fgsm_accuracy", "test.pgd5_accuracy", "test.pgd20_accuracy"]
    assert strong == ["test.pgd20_accuracy", "test.pgd1000_accuracy", "test.spsa_accuracy"]
    assert shade(0.0) == "#ffffff" and shade(1.0) == "#4caf50" and shade(float("nan")) == "#eeeeee"


def test_the_thesis_rows_stand_beside_variants_named_as_its_methods():
    from ablab.report.sections.robustness import THESIS_STRONGEST, THESIS_WHITE_BOX, robust_table_html, thesis_column

    beside = thesis_column(["Regular", "label smoothing", "LS", "pgd", "ALP", "lrm", "mixup"],
                           THESIS_WHITE_BOX["cifar10"])
    assert beside == {"Regular": "87.4 / 6.1 / 0.0 / 0.0 / 0.0", "label smoothing": "86.9 / 54.7 / 49.4 / 41.7 / 34.4",
                      "LS": "86.9 / 54.7 / 49.4 / 41.7 / 34.4", "pgd": "75.8 / 50.5 / 51.0 / 46.1 / 45.3",
                      "ALP": "74.0 / 52.6 / 53.6 / 49.1 / 48.5", "lrm": "68.5 / 52.8 / 53.8 / 51.4 / 51.0"}
    assert thesis_column(["ls"], THESIS_STRONGEST["cifar10"]) == {"ls": "34.4 / 7.2 / 8.9"}  # LS collapses
    agg = pd.DataFrame({"label": ["pgd"], "n": [1], "n_diverged": [0], "n_failed": [0], "test.accuracy.mean": [0.5],
                        "test.accuracy.sd": [np.nan], "test.accuracy.n": [1]})
    html = robust_table_html(agg, ["test.accuracy"], {}, {"pgd": "75.8 / 50.5"}, "thesis, Table 3.1 (%)")
    assert "<th>thesis, Table 3.1 (%)</th>" in html and "75.8 / 50.5" in html
