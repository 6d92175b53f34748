"""Report baselines: which variant each variant is compared with, per ``report.baselines`` role.

A baseline is written as a variant label, the first part of labels (a family, see
``ablab.report.tables.resolve_baselines``), or axis values (``{model.norm: none}``). Axis values
follow the "same other settings" rule: a variant's baseline is THE variant that matches the
selector (``ablab.selectors.matches``) and equals it on every axis the selector does not name;
a variant that matches the selector is its own baseline. E.g. ``{optimizer.name: sgd}`` gives
each Adam variant the SGD variant with its learning rate and norm. A key names an axis when it
is the axis, lies under it (``optimizer.name`` under ``optimizer``) or above it; naming one axis
of a zip group names the group (they vary together); ``label`` names every axis.

``baseline_pairs`` is the one resolution every report section uses (label → its baseline label,
None where no variant has the variant's other settings); ``check_baseline`` is validation's:
one ``ValueError`` when no variant matches or a variant would have several baselines.
"""

from __future__ import annotations

from typing import Any, Iterable

from ablab.report.tables import names_a_family, resolve_baselines, split_label
from ablab.selectors import matches
from ablab.labels import label_value

# (label, axes, resolved spec as a dict, replicate) of each run or variant
Row = tuple[str, dict[str, Any], dict[str, Any], int]
Pairs = dict[str, "str | None"]  # label -> its baseline label


def selector_text(selector: str | dict[str, Any]) -> str:
    """How the report names a baseline: the label as written, axis values as ``model.norm=none, lr=0.1``."""
    if isinstance(selector, str):
        return selector
    return ", ".join(f"{k}={v}" for k, v in selector.items())


def check_baseline(selector: str | dict[str, Any], rows: Iterable[Row], linked: Iterable[frozenset[str]] = ()) -> None:
    """``ValueError`` saying why when ``selector`` names no variant, or gives some variant several baselines."""
    pairs_of(selector, rows, linked)


def pairs_of(selector: str | dict[str, Any], rows: Iterable[Row], linked: Iterable[frozenset[str]] = ()) -> Pairs:
    """Label → the baseline variant ``selector`` gives it (None: none has its other settings); ``ValueError``
    when no variant matches or one variant would have several baselines."""
    variants = _variants(rows)
    labels = list(variants)
    if isinstance(selector, str):
        if selector not in labels and not names_a_family(selector, labels):
            raise ValueError(f"'{selector}' names no variant and no family of variants (variants: {_some(labels)})")
        return {label: found["b"] for label, found in resolve_baselines(labels, {"b": selector}).items()}
    _check_keys(selector, variants)
    found = [lb for lb, (axes, spec, rep) in variants.items()
             if matches(selector, axes=axes, spec=spec, label=lb, replicate=rep)]
    if not found:
        raise ValueError(f"{{{_text(selector)}}} matches no variant (variants: {_some(labels)})")
    named = _named_axes(selector, variants, linked)
    return {label: _partner(label, found, named, variants, selector) for label in labels}


def baseline_pairs(baselines: dict[str, Any], rows: Iterable[Row], linked: Iterable[frozenset[str]] = ()
                   ) -> tuple[dict[str, Pairs], dict[str, str]]:
    """Per role, label → baseline label; and per role whose selector resolves to nothing, why (never raises)."""
    rows = list(rows)
    labels = list(_variants(rows))
    pairs, problems = {}, {}
    for role, selector in baselines.items():
        try:
            pairs[role] = pairs_of(selector, rows, linked)
        except ValueError as err:
            pairs[role], problems[role] = dict.fromkeys(labels), str(err)
    return pairs, problems


def baseline_variants(pairs: dict[str, Pairs]) -> dict[str, str]:
    """Label → role of every variant that is some variant's baseline (the later role where it is both)."""
    return {partner: role for role, of in pairs.items() for partner in of.values() if partner is not None}


def families(baselines: dict[str, Any], pairs: dict[str, Pairs], rows: Iterable[Row],
             linked: Iterable[frozenset[str]] = ()) -> tuple[dict[str, str], dict[str, str]] | None:
    """Label → (family, group) for figures: by the first role with several baseline variants, its family is
    the values it names (a label's first part) and its group the other settings; None without such a role."""
    variants = _variants(rows)
    for role, selector in baselines.items():
        if len({p for p in pairs.get(role, {}).values() if p is not None}) < 2:
            continue
        if isinstance(selector, str):
            return ({lb: split_label(lb)[0] for lb in variants}, {lb: split_label(lb)[1] for lb in variants})
        named = _named_axes(selector, variants, linked)
        family = {lb: _values(axes, [a for a in axes if a in named]) for lb, (axes, _, _) in variants.items()}
        group = {lb: _values(axes, [a for a in axes if a not in named]) for lb, (axes, _, _) in variants.items()}
        return family, group
    return None


def _values(axes: dict[str, Any], keys: list[str]) -> str:
    """``lr=0.1, norm=none``: the axis values at ``keys`` as a label writes them."""
    return ", ".join(str(axes[k]) if k == "label" else f"{k.removesuffix('.name')}={label_value(axes[k])}"
                     for k in keys)


def _variants(rows: Iterable[Row]) -> dict[str, tuple[dict, dict, int]]:
    """Label → (axes, spec, replicate) of its first run, in study order."""
    out: dict[str, tuple[dict, dict, int]] = {}
    for label, axes, spec, rep in rows:
        out.setdefault(label, (axes or {}, spec or {}, int(rep)))
    return out


def _axes(variants: dict[str, tuple[dict, dict, int]]) -> list[str]:
    return list(dict.fromkeys(k for axes, _, _ in variants.values() for k in axes))


def _under(a: str, b: str) -> bool:
    """``a`` and ``b`` are one path, or one lies under the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _check_keys(selector: dict[str, Any], variants: dict[str, tuple[dict, dict, int]]) -> None:
    axes = _axes(variants)
    for key in selector:
        if key not in ("label", "replicate") and not any(_under(key, a) for a in axes):
            raise ValueError(f"'{key}' is not an axis of the study, so every variant has the same value there "
                             f"(axes: {', '.join(axes) or 'none'})")


def _named_axes(selector: dict[str, Any], variants: dict, linked: Iterable[frozenset[str]]) -> set[str]:
    """The axes the selector names: under or above its keys (all for ``label``), with their zip groups."""
    axes = _axes(variants)
    if "label" in selector:
        return set(axes)
    named = {a for a in axes if any(_under(key, a) for key in selector)}
    for group in linked:
        if named & group:
            named |= group
    return named


def _partner(label: str, found: list[str], named: set[str], variants: dict, selector: dict[str, Any]) -> str | None:
    """The matching variant with ``label``'s values on every axis not ``named``; itself when it matches."""
    if label in found:
        return label
    own = variants[label][0]
    same = [f for f in found if all(variants[f][0].get(a, _NONE) == own.get(a, _NONE)
                                    for a in set(own) | set(variants[f][0]) if a not in named)]
    if len(same) > 1:
        raise ValueError(f"{{{_text(selector)}}} gives '{label}' {len(same)} baselines with its other settings "
                         f"({_some(same)}); add axis values until one variant matches")
    return same[0] if same else None


_NONE = object()  # an axis a variant does not set


def _text(selector: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in selector.items())


def _some(labels: list[str], n: int = 6) -> str:
    shown = ", ".join(f"'{lb}'" for lb in labels[:n])
    return shown + (f", … ({len(labels)} in all)" if len(labels) > n else "")
