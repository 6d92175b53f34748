"""Many tests on one page: p-values adjusted for the family of tests they belong to.

Holm–Bonferroni (Holm 1979, "A simple sequentially rejective multiple test procedure"): sort
the m p-values, p₍₁₎ ≤ … ≤ p₍ₘ₎; the adjusted p₍ᵢ₎ is max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎).
Rejecting where the adjusted p ≤ α keeps the family-wise error rate at α under any dependence
between the tests. (scipy offers only Benjamini–Hochberg, ``stats.false_discovery_control``.)
"""

from __future__ import annotations

import numpy as np


def holm_adjust(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values in the input order; NaN stays NaN and is not counted in m."""
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if not m:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m − j + 1)·p₍ⱼ₎ for j = 1 … m
    out[order] = np.maximum.accumulate(scaled)  # adjusted p-values never decrease along the order
    return out
