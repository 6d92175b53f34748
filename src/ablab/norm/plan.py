"""Where norm layers go: by index of the conv/linear layer they follow (0-based, forward order)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from numbers import Integral
from typing import Annotated, Any, Literal, Union, get_args

import pydantic
from pydantic import AfterValidator, PlainValidator
from torch import nn

from ablab.errors import SpecError
from ablab.registry import NORMS


def _validate_norm(spec: Union[str, dict[str, Any]]) -> dict[str, Any]:
    try:
        return NORMS.validate(spec)
    except SpecError as err:
        raise ValueError(err.render()) from None


NormSpec = Annotated[Union[str, dict[str, Any]], AfterValidator(_validate_norm)]
"""A norm layer in a spec: a registered name, or a mapping with ``name`` and its parameters."""

PlacementName = Literal["all_hidden", "all", "first", "penultimate", "last"]
PlacementCount = Literal["first_k", "last_k", "last_hidden_k"]
PLACEMENT_NAMES: tuple[str, ...] = get_args(PlacementName)
PLACEMENT_COUNTS: tuple[str, ...] = get_args(PlacementCount)
_ALLOWED = (
    f"Allowed: {', '.join(PLACEMENT_NAMES)}, a mapping "
    + ", ".join(f"{{{c}: k}}" for c in PLACEMENT_COUNTS)
    + " or a list of layer indices (negative count from the end)"
)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def parse_placement(value: Any) -> Union[str, dict[str, int], list[int]]:
    """The placement's form checked and normalized; ranges need the model (``resolve_placement``)."""
    if isinstance(value, str):
        if value not in PLACEMENT_NAMES:
            close = difflib.get_close_matches(value, PLACEMENT_NAMES, n=1, cutoff=0.4)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown placement '{value}'.{hint} {_ALLOWED}")
        return value
    if isinstance(value, Mapping):
        if len(value) != 1 or next(iter(value)) not in PLACEMENT_COUNTS:
            keys = ", ".join(PLACEMENT_COUNTS)
            raise ValueError(f"a placement mapping has exactly one key of {keys} (got {dict(value)!r}). {_ALLOWED}")
        ((key, k),) = value.items()
        if not _is_int(k) or k < 1:
            raise ValueError(
                f"'{key}' counts layers and must be a positive integer (got {k!r}; for no norm layers use norm: none)"
            )
        return {key: int(k)}
    if isinstance(value, (list, tuple)):
        if not all(_is_int(i) for i in value):
            raise ValueError(f"layer indices must be integers (got {list(value)!r})")
        return [int(i) for i in value]
    raise ValueError(f"unknown placement (got {value!r}). {_ALLOWED}")


Placement = Annotated[
    Union[PlacementName, dict[PlacementCount, int], list[int]],
    PlainValidator(parse_placement),
]
"""``norm_at`` in a spec: a name, ``{first_k | last_k | last_hidden_k: k}`` or a list of indices.

Validation checks the form (a typo fails with the allowed forms); whether indices and counts fit
the model is checked when the model builds its ``NormPlan``.
"""

_PLACEMENT = pydantic.TypeAdapter(Placement)


class NormPlan:
    """Builds the norm layer after conv/linear layer ``index`` of a model with ``n_layers`` of them.

    ``placement`` (0-based layer indices in forward order; n = ``n_layers``, the last layer is
    the output layer):

    - ``all_hidden`` every layer but the last: 0 … n−2 (the default; no norm on the outputs)
    - ``all`` every layer: 0 … n−1
    - ``first`` [0]; ``penultimate`` [n−2]; ``last`` [n−1]
    - ``{first_k: k}`` 0 … k−1; ``{last_k: k}`` n−k … n−1 (the last layer included);
      ``{last_hidden_k: k}`` n−1−k … n−2 (the last k hidden layers)
    - a list of indices; negative ones count from the end (−1 = the last layer)

    A layer that gets a norm layer drops its bias (the norm's β subsumes it). The placement is
    checked even for norm ``none``, so a sweep fails on a bad value whichever norm comes first.

    Dissecting BatchNorm (seed 001) in these terms; its position vectors (author's code,
    ``positions_*.csv``) cover the hidden layers only, so "at the end" means the last hidden layers
    unless the thesis says "last layer included":

    ======================================================  =========  =======================
    thesis configuration                                    model      ``norm_at`` → layers
    ======================================================  =========  =======================
    standard: BN before every ReLU, none on the output      3c3d       all_hidden → 0–4
    (§3.1.2, Fig. 3.1)                                      allcnnc    all_hidden → 0–7
    "BatchNorm at the last layer": one BN more, after the   allcnnc    all → 0–8
    last conv (§4.1.3, Fig. 4.5)
    one BN layer after the first layer (App. A.1, (A))      both       first → [0]
    one BN layer at the penultimate layer (App. A.1, (B))   3c3d       penultimate → [4]
                                                            allcnnc    penultimate → [7]
    one BN layer after the last conv layer (Fig. A.13 (C))  allcnnc    last → [8]
    three BN layers at the end (Fig. A.4, A.10 (B))         3c3d       {last_hidden_k: 3} → 2–4
    four BN layers at the end (Fig. A.16, caption lost)     allcnnc    {last_hidden_k: 4} → 4–7
    four BN layers at the end, last layer included          allcnnc    {last_k: 4} → 5–8
    (Fig. A.16 (C))
    the first k layers (the position arrays' prefixes)      both       {first_k: k} → 0–(k−1)
    ======================================================  =========  =======================
    """

    def __init__(self, norm: NormSpec, n_layers: int, placement: Placement = "all_hidden"):
        self.spec = NORMS.validate(norm)
        self.n_layers = n_layers
        self.placement = _parse(placement)
        indices = resolve_placement(self.placement, n_layers)
        self.indices = frozenset(indices) if self.spec["name"] != "none" else frozenset()

    def has_norm(self, index: int) -> bool:
        return index in self.indices

    def make(self, index: int, num_features: int, dim: int) -> nn.Module:
        """The norm layer after layer ``index`` (``nn.Identity`` where none is placed)."""
        if not self.has_norm(index):
            return nn.Identity()
        params = {k: v for k, v in self.spec.items() if k != "name"}
        return NORMS.get(self.spec["name"])(num_features=num_features, dim=dim, **params)


def _parse(placement: Any) -> Union[str, dict[str, int], list[int]]:
    try:
        return _PLACEMENT.validate_python(placement)
    except pydantic.ValidationError as err:
        raise SpecError(err.errors()[0]["msg"].removeprefix("Value error, "), field="norm_at") from None


def resolve_placement(placement: Placement, n_layers: int) -> tuple[int, ...]:
    """The sorted layer indices a placement names in a model with ``n_layers`` conv/linear layers."""
    n = n_layers
    placement = _parse(placement)
    if isinstance(placement, str):
        if placement == "penultimate" and n < 2:
            raise SpecError(f"'penultimate' needs 2 conv/linear layers or more; the model has {n}", field="norm_at")
        named = {
            "all_hidden": range(n - 1),
            "all": range(n),
            "first": [0],
            "penultimate": [n - 2],
            "last": [n - 1],
        }
        return tuple(named[placement])
    if isinstance(placement, dict):
        ((key, k),) = placement.items()
        available = n - 1 if key == "last_hidden_k" else n
        if k > available:
            what = "hidden layers" if key == "last_hidden_k" else "conv/linear layers"
            raise SpecError(f"'{key}: {k}' out of range: the model has {available} {what}", field="norm_at")
        first = {"first_k": 0, "last_k": n - k, "last_hidden_k": n - 1 - k}[key]
        return tuple(range(first, first + k))
    out: set[int] = set()
    for i in placement:
        if not -n <= i < n:
            raise SpecError(
                f"layer index {i} out of range: the model has {n} conv/linear layers (0..{n - 1})", field="norm_at"
            )
        if i % n in out:
            raise SpecError(f"layer {i % n} is named twice in {placement}", field="norm_at")
        out.add(i % n)
    return tuple(sorted(out))
