"""CSV files of the report hold every float exactly: the text is its repr, and it reads back bit for bit."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pandas as pd

from ablab.report.exact_csv import to_csv
from fakestore import read_csv_exact

# doubles whose shortest round-trip form needs 16-17 significant digits, and the edges of the format
HARD = [0.1 + 0.2, 1 / 3, 2 / 3, math.nextafter(1.0, 2.0), 0.1 + 0.7, 2.0 ** -1074, 1.7976931348623157e308,
        -1.2345678901234567e-300, 123456789.12345679, -0.0, math.inf, -math.inf, math.nan]


def _fields(text: str, column: str) -> list[str]:
    return [row[column] for row in csv.DictReader(io.StringIO(text))]


def test_every_float_is_written_as_its_repr():
    text = to_csv(pd.DataFrame({"label": [f"v,{i}" for i in range(len(HARD))], "x": HARD}))
    fields = _fields(text, "x")
    assert fields[0] == "0.30000000000000004"  # 17 significant digits
    assert fields[-1] == ""  # NaN: an empty field, as pandas reads it
    for field, value in zip(fields[:-1], HARD[:-1]):
        assert field == repr(value)
        assert math.copysign(1, float(field)) == math.copysign(1, value)  # -0.0 keeps its sign
        assert float(field) == value


def test_csv_reads_back_bit_for_bit():
    rng = np.random.default_rng(0)
    random = rng.random(2000) * 10.0 ** rng.integers(-300, 300, 2000)
    frame = pd.DataFrame({"x": np.concatenate([HARD, random])})
    back = read_csv_exact(to_csv(frame))["x"].to_numpy()
    bits = back.view(np.int64)  # compares -0.0 and 0.0 as different, as they are
    assert np.array_equal(bits[: len(HARD) - 1], np.array(HARD[:-1]).view(np.int64))
    assert np.isnan(back[len(HARD) - 1])
    assert np.array_equal(back[len(HARD):], random)


def test_float32_values_are_written_as_the_doubles_they_are():
    values = np.array([0.1, 1 / 3, 1e-8], dtype=np.float32)
    back = read_csv_exact(to_csv(pd.DataFrame({"x": values})))
    assert np.array_equal(back["x"].to_numpy(), values.astype(np.float64))
