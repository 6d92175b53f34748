"""Report baselines written as axis values select the same variants as the labels they stand for (issue 12)."""

import numpy as np
import pandas as pd
import pytest

from ablab.report import write_report
from ablab.report.tables import split_label
from test_bn_report import FINAL, make_store


def test_axis_value_baselines_give_the_label_baselines_deltas(tmp_path):
    store = make_store(tmp_path, probes=False)
    # the runs' axes as a grid would record them: the BatchNorm variant and the learning-rate scale
    store._runs["axes"] = [{"bn": split_label(lb)[0], "lr_scale": float(split_label(lb)[1].split("=")[1])}
                           for lb in store._runs["label"]]
    store._study["spec"]["report"]["baselines"] = {"lower": {"bn": "vanilla"},
                                           "upper": {"bn": "bn_gamma_beta", "lr_scale": 1}}
    result = write_report(store)
    csv = pd.read_csv(result.path.parent / "tables" / "final.csv").set_index("label")
    # lower: the family 'vanilla' (each variant against vanilla at its own rate); upper: one variant
    assert csv.loc["bn_beta, lr_scale=1", "baseline_lower"] == "vanilla, lr_scale=1"
    assert csv.loc["bn_beta, lr_scale=10", "baseline_lower"] == "vanilla, lr_scale=10"
    assert (csv["baseline_upper"] == "bn_gamma_beta, lr_scale=1").all()
    mine, upper = FINAL["bn_beta, lr_scale=10"], FINAL["bn_gamma_beta, lr_scale=1"]
    assert csv.loc["bn_beta, lr_scale=10", "test.accuracy.delta_upper"] == pytest.approx(np.mean(mine) - np.mean(upper))
    assert "names no variant" not in result.table_text


def _with_axes(store, keep=("bn", "lr_scale")):
    axes = [{"bn": split_label(lb)[0], "lr_scale": float(split_label(lb)[1].split("=")[1])} for lb in store._runs["label"]]
    store._runs["axes"] = [{k: v for k, v in a.items() if k in keep} for a in axes]
    return store


def test_a_variant_without_a_partner_gets_a_note_and_no_delta(tmp_path):
    """``{lr_scale: 10}``: bn_none and the <script> variant exist at lr ×1 only, so they have no baseline."""
    store = _with_axes(make_store(tmp_path, probes=False))
    store._study["spec"]["report"]["baselines"] = {"lower": {"lr_scale": 10}}
    result = write_report(store)
    csv = pd.read_csv(result.path.parent / "tables" / "final.csv").set_index("label")
    assert csv.loc["bn_beta, lr_scale=1", "baseline_lower"] == "bn_beta, lr_scale=10"
    alone = ["bn_none, lr_scale=1"] + [lb for lb in csv.index if lb.startswith("<script>")]
    assert csv.loc[alone, "baseline_lower"].isna().all() and csv.loc[alone, "test.accuracy.delta_lower"].isna().all()
    assert "No lower baseline ('lr_scale=10') with the same other settings for" in " ".join(result.table_text.split())  # the caption wraps at 120
    assert "'bn_none, lr_scale=1'" in " ".join(result.table_text.split())  # the caption wraps at 120
    mine, base = FINAL["bn_beta, lr_scale=1"], FINAL["bn_beta, lr_scale=10"]
    assert csv.loc["bn_beta, lr_scale=1", "test.accuracy.delta_lower"] == pytest.approx(np.mean(mine) - np.mean(base))


def test_an_ambiguous_selector_in_a_stored_study_is_stated_not_a_crash(tmp_path):
    """Validation refuses it before the first run; a store written otherwise still gets its report."""
    store = _with_axes(make_store(tmp_path, probes=False), keep=("lr_scale",))  # the runs record only the rate
    store._study["spec"]["report"]["baselines"] = {"lower": {"lr_scale": 1}}
    result = write_report(store)
    assert "report.baselines.lower ('lr_scale=1') compares nothing" in " ".join(result.table_text.split())  # the caption wraps at 120
    assert "baselines with its other settings" in " ".join(result.table_text.split())  # the caption wraps at 120
    csv = pd.read_csv(result.path.parent / "tables" / "final.csv")
    assert csv["test.accuracy.delta_lower"].isna().all()
