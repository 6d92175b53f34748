"""Report baselines written as axis values select the same variants as the labels they stand for (issue 12)."""

import numpy as np
import pandas as pd
import pytest

from ablab.report import write_report
from ablab.report.tables import split_label
from test_bn_report import FINAL, make_store


def test_axis_value_baselines_give_the_label_baselines_deltas(tmp_path):
    store = make_store(tmp_path)
    # the runs' axes as a grid would record them: the BatchNorm variant and the learning-rate scale
    store._runs["axes"] = [{"bn": split_label(lb)[0], "lr_scale": float(split_label(lb)[1].split("=")[1])}
                           for lb in store._runs["label"]]
    store._study["report"]["baselines"] = {"lower": {"bn": "vanilla"},
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
