"""A baseline on the second axis of a 2×2 grid, end to end (issue 12): spec -> CLI -> store -> report.

Labels read ``model.norm=…, optimizer.lr=…``; ``{optimizer.lr: 0.05}`` is no first part of a label,
so only the "same other settings" rule can give each variant its baseline: the variant with
its own norm at lr 0.05. Δ and Welch p of the final table are recomputed here with pandas and
scipy from the stored metrics.
"""

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from ablab.cli import main
from ablab.report.context import ReportContext
from ablab.report.figures import BASELINE_COLOURS, BASELINE_LINE_WIDTH, LINE_WIDTH
from ablab.store import Store
from conftest import tiny_study

NORMS, LRS, BASE_LR = ("none", "batchnorm"), (0.1, 0.05), 0.05


def label(norm: str, lr: float) -> str:
    return f"model.norm={norm}, optimizer.lr={lr}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pairs")
    study = tiny_study(grid={"model.norm": list(NORMS), "optimizer.lr": list(LRS)},
                       report={"metrics": ["test.accuracy", "test.loss"], "curves": ["train.loss"],
                               "baselines": {"lower": {"optimizer.lr": BASE_LR}}})
    study["base"]["epochs"] = 1
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = tmp / "results"
    assert main(["run", str(path), "--out", str(out), "--threads", "1"]) == 0
    assert main(["report", str(out)]) == 0
    return out


def _final(out, ref: str) -> pd.DataFrame:
    """Per run: its label and the metric's value at its last epoch, straight from the store."""
    store = Store.open(out)
    try:
        metrics, runs = store.metrics(), store.runs()
    finally:
        store.close()
    split, name = ref.split(".")
    rows = metrics[(metrics["split"] == split) & (metrics["name"] == name)]
    last = rows.sort_values(["run", "epoch", "step"]).groupby("run").tail(1)
    return last.merge(runs[["run", "label"]], on="run")[["label", "value"]]


@pytest.mark.parametrize("ref", ["test.accuracy", "test.loss"])
def test_delta_and_welch_p_are_against_the_same_norm_at_the_base_lr(results, ref):
    csv = pd.read_csv(results / "report" / "tables" / "final.csv").set_index("label")
    final = _final(results, ref)
    assert len(csv) == 4 and (final.groupby("label").size() == 2).all()
    for norm in NORMS:
        partner = label(norm, BASE_LR)
        base = final.loc[final["label"] == partner, "value"].to_numpy()
        for lr in LRS:
            mine = final.loc[final["label"] == label(norm, lr), "value"].to_numpy()
            row = csv.loc[label(norm, lr)]
            assert row["baseline_lower"] == partner
            assert row[f"{ref}.delta_lower"] == pytest.approx(mine.mean() - base.mean(), abs=1e-12)
            if lr == BASE_LR:  # the baseline itself: no test
                assert np.isnan(row[f"{ref}.p_lower"])
            else:
                p = stats.ttest_ind(mine, base, equal_var=False).pvalue
                assert row[f"{ref}.p_lower"] == pytest.approx(p, rel=1e-9, nan_ok=True)
                assert row[f"{ref}.n_baseline_lower"] == 2


def test_figures_draw_every_baseline_variant_and_group_by_the_other_axis(results):
    store = Store.open(results)
    try:
        ctx = ReportContext(store, results / "report")
        baselines = {label(n, BASE_LR) for n in NORMS}
        assert {lb for lb, c in ctx.colours.items() if c == BASELINE_COLOURS["lower"]} == baselines
        assert {lb for lb, w in ctx.widths.items() if w == BASELINE_LINE_WIDTH} == baselines
        assert all(ctx.widths[label(n, 0.1)] == LINE_WIDTH for n in NORMS)
        # one panel per norm (the settings the baseline does not name); the legend names the lr
        assert ctx.panels == {label(n, lr): [f"model.norm={n}"] for n in NORMS for lr in LRS}
        assert ctx.panels.names[label("batchnorm", 0.1)] == "optimizer.lr=0.1"
        # the two non-baseline variants at lr 0.1 share one colour across the panels
        assert ctx.colours[label("none", 0.1)] == ctx.colours[label("batchnorm", 0.1)]
    finally:
        store.close()
    page = (results / "report" / "index.html").read_text()
    assert "compares nothing" not in page and "No lower baseline" not in page
