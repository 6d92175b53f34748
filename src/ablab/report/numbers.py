"""Numbers on the report's pages: precision set by the standard error, one notation per column.

Every table of the page and its Markdown/LaTeX copies goes through these helpers (the CSV keeps
full precision, ``exact_csv``):

- ``format_mean_sd(mean, sd, n)``: ``0.944 ± 0.031``. The standard error SE = SD/√n is shown to
  two significant digits, so the mean and the SD are rounded to the decimal place of SE's second
  digit: the digits shown are those the seeds resolve, no more (rounding moves the mean by at
  most SE/20). n = 1: the mean to 4 significant digits and ``± —``; SD = 0 (every seed equal):
  the mean to 4 significant digits and ``(all equal)``, never ``1 ± 0``.
- ``format_value(x, se)``: one number (a difference of means, a grid cell) by the same rule.
- ``is_scientific(values)``: a column is in scientific notation as a whole, never mixed: when its
  largest magnitude is ≥ 1e5 or below 1e-3. Scientific cells read ``(8.27 ± 0.29)e-04``.
- ``format_p(p)``: a p-value to 2 significant digits.
- ``column_format(values, ses, scientific)``: one precision for a whole column (``Column``): the
  decimal place of the second significant digit of the column's median SE, and in a scientific
  column one power of ten for every cell. Passed as ``column=`` to ``format_mean_sd`` and
  ``format_value``, every cell of the column shows the same number of decimals; an SD too small
  for that place reads ``± <0.001`` (never ``0.99999848 ± 0.00000061`` beside ``0.97 ± 0.01``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

MISSING = "—"
SCI_LOW, SCI_HIGH = 1e-3, 1e5  # magnitudes outside [SCI_LOW, SCI_HIGH) make a column scientific
SE_DIGITS = 2  # significant digits of the standard error
PLAIN_DIGITS = 4  # significant digits of a number without a standard error


def is_number(x: Any) -> bool:
    """A finite real number (not None, NaN or ±inf)."""
    try:
        return x is not None and not pd.isna(x) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def is_scientific(values: Iterable[Any]) -> bool:
    """Whether a column of these values is shown in scientific notation (all of it, or none)."""
    sizes = [abs(float(v)) for v in values if is_number(v) and float(v) != 0]
    return bool(sizes) and (max(sizes) >= SCI_HIGH or max(sizes) < SCI_LOW)


@dataclass(frozen=True)
class Column:
    """The precision every cell of a table column shares: its power of ten and its decimal places."""

    exponent: int = 0  # cells show value / 10**exponent (scientific columns), then e±XX
    places: int | None = None  # decimals of the scaled values; None: each number to 4 significant digits


def column_format(values: Iterable[Any], ses: Iterable[Any], scientific: bool = False) -> Column:
    """One precision for a column: the power of ten of its largest magnitude (scientific only) and the
    decimal place of the second significant digit of its median positive standard error (scaled)."""
    values, ses = list(values), list(ses)
    sizes = [abs(float(v)) for v in values if is_number(v) and float(v) != 0]
    exponent = _exponent(max(sizes)) if scientific and sizes else 0
    positive = sorted(float(s) for s in ses if is_number(s) and float(s) > 0)
    if not positive:
        return Column(exponent, None)
    median = positive[(len(positive) - 1) // 2] if len(positive) % 2 else (positive[len(positive) // 2 - 1]
                                                                           + positive[len(positive) // 2]) / 2
    return Column(exponent, _places(median / 10.0 ** exponent))


def standard_error(sd: Any, n: Any) -> float:
    """SD/√n; NaN when either is unknown or n < 2."""
    if not (is_number(sd) and is_number(n)) or int(n) < 2:
        return math.nan
    return float(sd) / math.sqrt(int(n))


def format_mean_sd(mean: Any, sd: Any, n: Any, scientific: bool = False, column: Column | None = None) -> str:
    """``mean ± sd`` to the decimal place of the SE's second significant digit; — for a missing mean.

    With ``column`` (``column_format``) the column's shared power of ten and decimal places instead.
    """
    if not is_number(mean):
        return MISSING
    mean = float(mean)
    se = standard_error(sd, n)
    if column is None:
        base = mean if mean != 0 else (float(sd) if is_number(sd) else 0.0)
        column = Column(_exponent(base) if scientific else 0, _places(se) if is_number(se) and se > 0 else None)
        if scientific and column.places is not None:
            column = Column(column.exponent, _places(se / 10.0 ** column.exponent))
    scale = 10.0 ** column.exponent
    m = _shown(mean / scale, column.places)
    if not is_number(se):  # one value (or no SD): nothing sets the precision
        text, bare = f"{m} ± {MISSING}", False
    elif se == 0:
        text, bare = f"{m} (all equal)", True
    elif column.places is None:
        places = _places(se / scale)
        text, bare = f"{_fixed(mean / scale, places)} ± {_fixed(float(sd) / scale, places)}", False
    else:
        text, bare = f"{m} ± {_small(float(sd) / scale, column.places)}", False
    if not column.exponent:
        return text
    if bare:
        return text.replace(" (all equal)", f"e{column.exponent:+03d} (all equal)")
    return f"({text})e{column.exponent:+03d}"


def format_value(x: Any, se: Any = math.nan, scientific: bool = False, sign: bool = False,
                 column: Column | None = None) -> str:
    """One number: to the SE's second significant digit when an SE is known, else to 4 significant digits;
    with ``column``, to the column's shared places and power of ten."""
    if not is_number(x):
        return MISSING
    x = float(x)
    if column is None:
        exponent = _exponent(x) if scientific else 0
        places = _places(float(se) / 10.0 ** exponent) if is_number(se) and float(se) > 0 else None
        column = Column(exponent, places)
    scale = 10.0 ** column.exponent
    text = _shown(x / scale, column.places)
    if sign and not text.startswith("-") and any(c in "123456789" for c in text):  # no "+0"
        text = "+" + text
    return f"{text}e{column.exponent:+03d}" if column.exponent else text


def format_with_error(x: Any, err: Any, column: Column | None = None) -> str:
    """``0.9523 ± 0.0031``: a value and its error bar, both to the error's second significant digit, or to the
    column's places (``column``; an error too small for them reads ``<0.0001``); — for a missing value."""
    if not is_number(x):
        return MISSING
    if not is_number(err):
        return format_value(x, column=column)
    column = column or Column(0, _places(float(err)) if float(err) > 0 else None)
    scale = 10.0 ** column.exponent
    if column.places is None:
        text = f"{_significant(float(x) / scale)} ± {_significant(float(err) / scale)}"
    else:
        text = f"{_fixed(float(x) / scale, column.places)} ± {_small(float(err) / scale, column.places)}"
    return f"({text})e{column.exponent:+03d}" if column.exponent else text


def format_p(p: Any) -> str:
    """A p-value to 2 significant digits (scientific below 0.001); n/a when it could not be computed."""
    if not is_number(p):
        return "n/a"
    p = float(p)
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def format_delta(delta: Any, p: Any, digits: int = 2) -> str:
    """A difference with its p-value, ``+0.12 (p=0.034)``: fixed ``digits`` places, signed; — when undefined."""
    if not is_number(delta):
        return MISSING
    text = f"{float(delta):+.{digits}f}"
    return f"{text} (p={format_p(p)})" if is_number(p) else text


def format_fixed(x: Any, digits: int = 2) -> str:
    """A number to fixed ``digits`` places; — when undefined."""
    return f"{float(x):.{digits}f}" if is_number(x) else MISSING


def _places(se: float) -> int:
    """Decimal places that show ``se`` (> 0) to ``SE_DIGITS`` significant digits (negative: tens, hundreds …)."""
    return SE_DIGITS - 1 - math.floor(math.log10(se))


def _shown(x: float, places: int | None) -> str:
    """``x`` to ``places`` decimals, or to ``PLAIN_DIGITS`` significant digits when no precision is set."""
    return _significant(x) if places is None else _fixed(x, places)


def _small(sd: float, places: int) -> str:
    """An SD at the column's places; ``<0.001`` (one unit of the last place) when it would round to zero."""
    text = _fixed(sd, places)
    if any(c in "123456789" for c in text):
        return text
    return "<" + _fixed(10.0 ** -places, places)


def _fixed(x: float, places: int) -> str:
    """``x`` rounded to ``places`` decimals (negative: to tens, hundreds …), without an exponent."""
    text = f"{round(x, places):.{max(places, 0)}f}"
    return "0" + text[2:] if text.startswith("-0") and not any(c in "123456789" for c in text) else text


def _significant(x: float) -> str:
    """``x`` to ``PLAIN_DIGITS`` significant digits, trailing zeros kept (``1.000``), without an exponent."""
    if x == 0:
        return "0"
    return _fixed(x, PLAIN_DIGITS - 1 - math.floor(math.log10(abs(x))))


def _exponent(x: float) -> int:
    return math.floor(math.log10(abs(x))) if x else 0
