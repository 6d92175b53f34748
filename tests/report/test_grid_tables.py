"""Grids and best configurations as files: CSV with exact numbers, Markdown and LaTeX with escaped labels."""

from __future__ import annotations

import re

import numpy as np

from ablab.analysis.grids import best_configurations, grid_table
from ablab.report.grid_tables import (
    best_to_csv,
    best_to_latex,
    best_to_markdown,
    grid_to_latex,
    grid_to_markdown,
    grids_to_csv,
)
from fakestore import read_csv_exact
from gridframes import make_frames


def _parse_cells(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"(-?\d+\.\d+(?:e[+-]\d+)?) (?:±|\$\\pm\$)", text)]


def test_csv_markdown_and_latex_round_trip_the_numbers():
    per_run, runs = make_frames()
    tables = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")
    back = read_csv_exact(grids_to_csv(tables))
    assert len(back) == 4 * 3 * 2 and back["best"].sum() == 4
    for t in tables:
        rows = back[(back["optimizer.name"] == t.facet["optimizer.name"]) & (back["sam"] == t.facet["sam"])]
        got = rows.pivot(index="optimizer.lr", columns="optimizer.weight_decay", values="mean")
        want = t.mean.rename(index=float, columns=float)
        assert np.array_equal(got.loc[want.index, want.columns].to_numpy(), want.to_numpy())  # bit for bit
    adam = tables[2]
    se = (adam.sd / np.sqrt(adam.n)).to_numpy().ravel()
    for text in (grid_to_markdown(adam), grid_to_latex(adam)):  # rounded within SE/20 (2 digits of the SE)
        assert np.all(np.abs(np.array(_parse_cells(text)) - adam.mean.to_numpy().ravel()) <= se / 20)
    # SD 0.23 of 3 repeats: SE 0.13, so two decimals (not 1.023 ± 0.23)
    assert "**1.02 ± 0.23**" in grid_to_markdown(adam) and r"\textbf{1.02 $\pm$ 0.23}" in grid_to_latex(adam)
    assert r"optimizer.lr \textbackslash{} optimizer.weight\_decay" in grid_to_latex(adam)

    best = best_configurations(per_run, runs, "test.loss", k=4, baseline={"sam": {"rho": 0.05}})
    full = read_csv_exact(best_to_csv(best))
    assert len(full) == 24 and np.array_equal(full["mean"].to_numpy(), best.ranking["mean"].to_numpy())
    assert full.loc[0, "p_vs_runner_up"] == best.runner_up.p and full.loc[0, "p_vs_baseline"] == best.baseline.p
    se = (best.table["sd"] / np.sqrt(best.table["n"])).to_numpy()
    for text in (best_to_markdown(best), best_to_latex(best)):
        assert np.all(np.abs(np.array(_parse_cells(text)) - best.table["mean"].to_numpy()) <= se / 20)
        assert f"p = {best.runner_up.p:.2g}" in text
        means = re.findall(r"(-?\d+\.(\d+)) (?:±|\$\\pm\$)", text)
        assert len({len(decimals) for _, decimals in means}) == 1, means  # one precision for the column (issue 21)


def test_grid_csv_keeps_a_17_digit_mean_of_one_run_and_leaves_an_empty_cell_empty():
    per_run, runs = make_frames()
    per_run.loc[per_run["run"].str.startswith("sgd-0.1-0.0-False"), "status"] = "diverged"  # no finished run
    cell = per_run["run"].str.startswith("adam-0.01-0.0001-False")
    per_run.loc[cell & (per_run["replicate"] > 0), "status"] = "failed"  # one finished run: n = 1, no SD
    per_run.loc[cell & (per_run["replicate"] == 0), "test.loss"] = 0.1 + 0.2  # 0.30000000000000004
    text = grids_to_csv(grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss"))
    assert ",0.30000000000000004," in text
    back = read_csv_exact(text).set_index(["optimizer.name", "sam", "optimizer.lr", "optimizer.weight_decay"])
    one = back.loc[("adam", "none", 0.01, 0.0001)]
    assert one["mean"] == 0.1 + 0.2 and np.isnan(one["sd"]) and one["n"] == 1 and one["n_bad"] == 2
    assert one["best"]  # 0.3 beats every other adam cell (≥ 0.88)
    empty = back.loc[("sgd", "none", 0.1, 0.0)]
    assert np.isnan(empty["mean"]) and np.isnan(empty["sd"]) and empty["n"] == 0 and empty["n_bad"] == 3


def test_labels_with_markup_are_escaped_in_markdown_and_latex():
    per_run, runs = make_frames()
    runs["axes"] = [{**a, "optimizer.name": "a|b_&%$#"} if a["optimizer.name"] == "sgd" else a for a in runs["axes"]]
    t = grid_table(per_run, runs, "optimizer.lr", "optimizer.weight_decay", "test.loss")[0]
    assert r"a\|b\_&amp;%$#" in grid_to_markdown(t)
    assert r"a|b\_\&\%\$\#" in grid_to_latex(t)


def test_the_best_tables_mean_column_has_one_precision():
    """Issue 21: a noisy and a quiet variant in one column share its decimals (the median SE's)."""
    import pandas as pd

    from ablab.report.grid_tables import best_column, format_mean_sd

    frame = pd.DataFrame({"mean": [0.5, 0.52, 0.61], "sd": [0.1, 0.0001, 0.05], "n": [3, 3, 3]})
    column = best_column(frame)
    cells = [format_mean_sd(m, s, n, column=column) for m, s, n in frame.itertuples(index=False)]
    assert cells == ["0.500 ± 0.100", "0.520 ± <0.001", "0.610 ± 0.050"]
