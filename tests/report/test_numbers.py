"""Numbers on the page: precision from the standard error, one notation per column, Holm, CI bands."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablab.analysis.multiple_tests import holm_adjust
from ablab.analysis.seeds import ci_halfwidth
from ablab.report.numbers import (column_format, format_delta, format_fixed, format_mean_sd, format_p, format_value, is_scientific,
                                  standard_error)
from ablab.report.plot_scale import data_limits, use_log_scale
from ablab.report.tables import table_rows, to_markdown

NAN = float("nan")


@pytest.mark.parametrize("mean, sd, n, text", [
    # SE = 0.033891/√3 = 0.0196 → 2 significant digits at 1e-3 → 3 decimals for mean and SD
    (0.87403, 0.033891, 3, "0.874 ± 0.034"),
    # SE = 0.00094944/√2 = 0.00067 → 5 decimals
    (0.68, 0.00094944, 2, "0.68000 ± 0.00095"),
    # SE = 12.3/√3 = 7.1 → one decimal
    (123.456, 12.3, 3, "123.5 ± 12.3"),
    # SE = 120/√4 = 60 → 2 digits of 60 end at the units; SE = 1200/√4 = 600 → to tens
    (12345.6, 120.0, 4, "12346 ± 120"),
    (12345.6, 1200.0, 4, "12350 ± 1200"),
    # SE = 0: every seed equal; never "1 ± 0" or "0.94444444 ± 0.00000000"
    (0.94444444, 0.0, 3, "0.9444 (all equal)"),
    (1.0, 0.0, 3, "1.000 (all equal)"),
    # n = 1: no SD, the mean to 4 significant digits
    (0.5, NAN, 1, "0.5000 ± —"),
    (0.5, 0.1, 1, "0.5000 ± —"),
    (NAN, NAN, 0, "—"),
    (float("inf"), 1.0, 3, "—"),
    (-0.0001, 0.01, 4, "-0.0001 ± 0.0100"),
])
def test_mean_sd_rounded_by_the_standard_error(mean, sd, n, text):
    assert format_mean_sd(mean, sd, n) == text


@pytest.mark.parametrize("mean, sd, n, text", [
    (8.271e-4, 2.9e-5, 3, "(8.27 ± 0.29)e-04"),  # SE 1.7e-5: 2 digits → 1e-6 → mantissa to 0.01
    (1.5e6, 2e4, 4, "(1.500 ± 0.020)e+06"),
    (1e-4, 0.0, 3, "1.000e-04 (all equal)"),
    (2.5e-5, NAN, 1, "(2.500 ± —)e-05"),
])
def test_scientific_cells(mean, sd, n, text):
    assert format_mean_sd(mean, sd, n, scientific=True) == text


def test_shown_digits_are_those_the_se_resolves():
    """The last shown digit of the mean is the SE's second significant digit, at any scale."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        scale = 10.0 ** rng.uniform(-3, 4)
        mean, sd, n = rng.normal() * scale, abs(rng.normal()) * scale * 0.1 + 1e-12, int(rng.integers(2, 10))
        text = format_mean_sd(mean, sd, n)
        shown_mean, shown_sd = (float(x) for x in text.split(" ± "))
        se = sd / math.sqrt(n)
        step = 10.0 ** (math.floor(math.log10(se)) - 1)  # one unit of the last shown digit
        assert abs(shown_mean - mean) <= step / 2 * (1 + 1e-9) + 1e-15
        assert abs(shown_sd - sd) <= step / 2 * (1 + 1e-9) + 1e-15
        assert step <= se / 10 * (1 + 1e-9)  # at least 2 significant digits of the SE


def test_one_notation_per_column():
    assert not is_scientific([0.9, 0.95, 0.0008])  # the largest magnitude decides: fixed
    assert is_scientific([8.2e-4, 9.1e-4, 0.0])
    assert is_scientific([2e5, 1.0])
    assert not is_scientific([NAN, None, 0.0])  # nothing to show: fixed
    column = [format_mean_sd(m, s, 3, is_scientific([8.271e-4, 0.5e-4])) for m, s in ((8.271e-4, 2.9e-5), (0.5e-4, 1e-6))]
    assert all(c.startswith("(") and "e-0" in c for c in column)  # never mixed


def test_single_values_and_p_values():
    assert format_value(0.0123456, 0.0021, sign=True) == "+0.0123"
    assert format_value(-3e-5, 1e-6, scientific=True) == "-3.00e-05"
    assert format_value(12345.678) == "12350"  # 4 significant digits without an SE
    assert format_value(0.0, 0.0, sign=True) == "0"  # no "+0"
    assert format_value(NAN) == "—"
    assert format_p(0.0004) == "4.0e-04" and format_p(0.0412) == "0.041" and format_p(NAN) == "n/a"
    assert math.isnan(standard_error(0.1, 1)) and standard_error(0.2, 4) == pytest.approx(0.1)


def test_holm_against_a_hand_computation():
    # sorted: 0.01, 0.02, 0.03, 0.04 (m = 4) → 4·0.01 = 0.04, 3·0.02 = 0.06, 2·0.03 = 0.06, 1·0.04 = 0.04 → 0.06
    got = holm_adjust([0.03, 0.01, NAN, 0.04, 0.02])
    np.testing.assert_allclose(got, [0.06, 0.04, NAN, 0.06, 0.06])
    np.testing.assert_allclose(holm_adjust([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm_adjust([0.2]), [0.2])  # one test: unchanged
    assert holm_adjust([]).shape == (0,) and np.isnan(holm_adjust([NAN])).all()


def test_holm_is_at_least_raw_and_at_most_bonferroni():
    p = np.random.default_rng(3).uniform(0, 0.2, 30)
    adjusted = holm_adjust(p)
    assert np.all(adjusted >= p) and np.all(adjusted <= np.minimum(1, len(p) * p) + 1e-15)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in the raw p


def test_ci_halfwidth_is_student_t():
    values = np.array([0.91, 0.95, 0.93])
    low, high = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
    assert ci_halfwidth(values.std(ddof=1), 3) == pytest.approx((high - low) / 2)
    assert ci_halfwidth(1.0, 2) == pytest.approx(12.706 / math.sqrt(2), rel=1e-4)
    assert np.isnan(ci_halfwidth(0.1, 1))  # n = 1: no band


def test_log_scale_only_for_positive_values_spanning_decades():
    assert use_log_scale([2.3, 0.5, 0.01])  # ratio 230
    assert not use_log_scale([2.3, 0.5, 0.1])  # ratio 23
    assert not use_log_scale([2.3, -0.1, 0.001])
    assert not use_log_scale([NAN])


def test_limits_hold_every_value_with_a_margin():
    lo, hi = data_limits([0.95, 0.97, 1.0])
    assert lo == pytest.approx(0.9475) and hi == pytest.approx(1.0025)  # zoomed, not 0–1
    lo, hi = data_limits([0.01, 1.0], log=True)
    assert lo == pytest.approx(10 ** -2.1) and hi == pytest.approx(10 ** 0.1)
    lo, hi = data_limits([0.5])
    assert lo < 0.5 < hi


def test_a_rendered_table_has_one_notation_per_column_and_no_false_precision():
    agg = pd.DataFrame({
        "label": ["a", "b", "c"], "n": 3, "n_diverged": 0, "n_failed": 0,
        "train.loss.mean": [8.271e-4, 9.2e-4, 5e-5], "train.loss.sd": [2.9e-5, 1e-4, 0.0], "train.loss.n": 3,
        "test.accuracy.mean": [0.94444444, 0.9, 1.0], "test.accuracy.sd": [0.0, 0.0173, 0.0], "test.accuracy.n": [3, 3, 1],
    })
    header, rows = table_rows(agg, ["train.loss", "test.accuracy"])
    loss, acc = [r[1] for r in rows], [r[2] for r in rows]
    # one power of ten and one precision per column: the median SE (0.37e-04; 0.00999) sets the places
    assert loss == ["(8.27 ± 0.29)e-04", "(9.20 ± 1.00)e-04", "0.50e-04 (all equal)"]  # all scientific
    assert acc == ["0.9444 (all equal)", "0.9000 ± 0.0173", "1.0000 ± — (n=1)"]  # SE 0.00999: 4 places
    md = to_markdown(agg, ["train.loss", "test.accuracy"], "final epoch")
    assert all(cell in md for cell in loss + acc) and "± 0.00000000" not in md and "1 ± 0" not in md


def test_a_delta_cell_is_signed_fixed_with_its_p_value():
    assert format_delta(-0.1234, 0.0321) == "-0.12 (p=0.032)"
    assert format_delta(1.5, float("nan")) == "+1.50"
    assert format_delta(float("nan"), 0.5) == "—"
    assert format_delta(0.004, 2e-5) == "+0.00 (p=2.0e-05)"
    assert format_fixed(4.25, 1) == "4.2" and format_fixed(None) == "—"


def test_one_precision_per_column_and_a_tiny_sd_at_that_precision():
    """``0.99999848 ± 0.00000061`` beside ``0.9731 ± 0.0042`` becomes ``1.0000 ± <0.0001``: one decimal place
    per column, from its median SE (here 0.0042/√2 = 0.0030 → 4 places), every cell with the same decimals."""
    agg = pd.DataFrame({"label": ["a", "b", "c"], "n": 2, "n_diverged": 0, "n_failed": 0,
                        "test.accuracy.mean": [0.9731, 0.99999848, 0.9512], "test.accuracy.sd": [0.0042, 6.1e-7, 0.0301],
                        "test.accuracy.n": 2})
    _, rows = table_rows(agg, ["test.accuracy"])
    assert [r[1] for r in rows] == ["0.9731 ± 0.0042", "1.0000 ± <0.0001", "0.9512 ± 0.0301"]
    decimals = {len(r[1].split(" ± ")[0].split(".")[1]) for r in rows}
    assert decimals == {4}
    column = column_format([0.5, 0.25], [0.0, float("nan")])
    assert column.places is None and format_mean_sd(0.5, 0.0, 3, column=column) == "0.5000 (all equal)"
    assert format_mean_sd(123.0, 0.01, 4, column=column_format([123.0], [40.0])) == "123 ± <1"


def test_a_value_with_its_error_bar_at_its_columns_precision():
    """The variability table's ρ: ``0.99999848 ± 0.00000061`` beside ``0.9500 ± 0.0031`` reads ``1.0000 ± <0.0001``."""
    from ablab.report.numbers import format_with_error

    column = column_format([0.95, 0.99999848], [0.0031, 6.1e-7])
    assert [format_with_error(v, err, column) for v, err in ((0.95, 0.0031), (0.99999848, 6.1e-7))] == [
        "0.9500 ± 0.0031", "1.0000 ± <0.0001"]
    assert format_with_error(0.99999848, 6.1e-7) == "0.99999848 ± 0.00000061"  # alone: the error's own digits
    assert format_with_error(NAN, 0.1) == "—" and format_with_error(0.5, NAN) == "0.5000"
