"""Report baselines named by a variant label, a family of labels, or axis values (``{model.norm: none}``).

One resolution for validation (before the first run) and for the report, so a baseline that the
report would not find is refused up front. An axis-value selector names the variant(s) it matches
(``ablab.selectors.matches``): one variant is named by its label; several are a family when their
labels share the first part and that family holds no other variant (then each variant is compared
with the family member of its own group, as for a family name written out).
"""

from __future__ import annotations

from typing import Any, Iterable

from ablab.report.tables import names_a_family, split_label
from ablab.selectors import matches

# (label, axes, resolved spec as a dict, replicate) of each run or variant
Row = tuple[str, dict[str, Any], dict[str, Any], int]


def baseline_name(selector: str | dict[str, Any], rows: Iterable[Row]) -> str:
    """The label or family name that ``selector`` stands for; ``ValueError`` saying why when there is none."""
    rows = list(rows)
    labels = list(dict.fromkeys(r[0] for r in rows))
    if isinstance(selector, str):
        if selector in labels or names_a_family(selector, labels):
            return selector
        raise ValueError(f"'{selector}' names no variant and no family of variants (variants: {_some(labels)})")
    found = list(dict.fromkeys(label for label, axes, spec, rep in rows
                               if matches(selector, axes=axes, spec=spec, label=label, replicate=rep)))
    if not found:
        raise ValueError(f"{selector} matches no variant (variants: {_some(labels)})")
    if len(found) == 1:
        return found[0]
    families = {split_label(label)[0] for label in found}
    family = families.pop() if len(families) == 1 else None
    if family is not None and {lb for lb in labels if split_label(lb)[0] == family} == set(found):
        return family
    raise ValueError(f"{selector} matches {len(found)} variants that are no family of labels ({_some(found)}); "
                     "add axis values until it names one variant, or put that axis first in the grid")


def baseline_names(baselines: dict[str, Any], rows: Iterable[Row]) -> dict[str, str]:
    """Per role, the label or family; a selector that names nothing stays as its text (the report says so)."""
    rows = list(rows)
    out = {}
    for role, selector in baselines.items():
        try:
            out[role] = baseline_name(selector, rows)
        except ValueError:
            out[role] = selector if isinstance(selector, str) else ", ".join(f"{k}={v}" for k, v in selector.items())
    return out


def _some(labels: list[str], n: int = 6) -> str:
    shown = ", ".join(f"'{lb}'" for lb in labels[:n])
    return shown + (f", … ({len(labels)} in all)" if len(labels) > n else "")
