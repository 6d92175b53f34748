"""Axis scales and limits of the report's figures, and the confidence bands drawn around means.

- ``use_log_scale``: a log y-axis when the values are positive and span more than ``LOG_RATIO``
  (max/min > 30: a loss from 2.3 to 0.01 is one squashed corner on a linear axis);
- ``data_limits``: y-limits that hold every plotted value with a margin of ``MARGIN`` of the
  span (of the log span on a log axis): an accuracy between 0.95 and 1 gets an axis from 0.9475
  to 1.0025, not 0–1, and no value is ever clipped;
- ``ci_band``: the 95 % t-based confidence interval of the mean over seeds
  (``ablab.analysis.seeds.ci_halfwidth``); no band where n < 2.
"""

from __future__ import annotations

import numpy as np

from ablab.analysis.seeds import ci_halfwidth

LOG_RATIO = 30.0
MARGIN = 0.05
CI_LEVEL = 0.95
BAND_TEXT = "band: 95 % confidence interval of the mean over seeds (Student's t, n − 1 dof; none for n = 1)"


def use_log_scale(values) -> bool:
    """True when every finite value is positive and max/min exceeds ``LOG_RATIO``."""
    finite = _finite(values)
    return bool(len(finite)) and finite.min() > 0 and finite.max() / finite.min() > LOG_RATIO


def data_limits(values, log: bool = False, margin: float = MARGIN) -> tuple[float, float]:
    """(low, high) holding every finite value, widened by ``margin`` of the span on each side.

    On a log axis the margin is a factor (span in log10); a single value gets ±5 % of itself
    (or ±0.05 at zero) so the axis is never empty.
    """
    finite = _finite(values)
    if log:
        finite = finite[finite > 0]
    if not len(finite):
        return (0.1, 10.0) if log else (0.0, 1.0)
    lo, hi = (np.log10(finite.min()), np.log10(finite.max())) if log else (finite.min(), finite.max())
    span = hi - lo
    if span == 0:
        span = 1.0 if log else (abs(lo) * 2 or 1.0)
    lo, hi = lo - margin * span, hi + margin * span
    return (float(10.0 ** lo), float(10.0 ** hi)) if log else (float(lo), float(hi))


def ci_band(mean, sd, n) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) edges of the ``CI_LEVEL`` confidence interval of the mean; NaN where n < 2."""
    mean = np.asarray(mean, dtype=float)
    half = ci_halfwidth(sd, n, CI_LEVEL)
    return mean - half, mean + half


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def zoom_to_lines(ax) -> tuple[float, float]:
    """Set ``ax``'s y-limits to hold every point of its lines (``data_limits``, on its y-scale); returns them."""
    values = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float)]
    limits = data_limits(values, log=ax.get_yscale() == "log")
    ax.set_ylim(*limits)
    return limits
