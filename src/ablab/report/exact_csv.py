"""CSV whose numbers read back bit for bit: every float is written as its ``repr``.

``repr`` of a float is the shortest decimal that parses back to the same double (up to 17
significant digits, e.g. ``0.30000000000000004``), so a table is exact whatever pandas' own
float formatting does in a given version. Reading must be exact too: Python's ``float`` and
pandas ≥ 3 are; pandas < 3's default C parser can be 1 ulp off (pass
``float_precision="round_trip"`` there).
"""

from __future__ import annotations

import pandas as pd


def to_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text without the index; floats as ``repr``, NaN as an empty field, ±inf as ``inf``."""
    return frame.to_csv(index=False, float_format=_repr_float)


def _repr_float(value: float) -> str:
    return repr(float(value))  # float(): numpy scalars' repr is ``np.float64(…)``
