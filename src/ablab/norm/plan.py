"""Where norm layers go: by index of the conv/linear layer they follow (0-based, forward order)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator

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
Placement = Union[Literal["all_hidden", "all", "first", "penultimate", "last"], list[int]]


class NormPlan:
    """Builds the norm layer after conv/linear layer ``index`` of a model with ``n_layers`` of them.

    ``placement``: ``all_hidden`` (every layer but the last), ``all``, ``first``, ``penultimate``,
    ``last``, or explicit indices (negative counts from the end). A layer that gets a norm layer
    drops its bias (the norm's β subsumes it).
    """

    def __init__(self, norm: NormSpec, n_layers: int, placement: Placement = "all_hidden"):
        self.spec = NORMS.validate(norm)
        self.n_layers = n_layers
        self.indices = _resolve(placement, n_layers) if self.spec["name"] != "none" else frozenset()

    def has_norm(self, index: int) -> bool:
        return index in self.indices

    def make(self, index: int, num_features: int, dim: int) -> nn.Module:
        """The norm layer after layer ``index`` (``nn.Identity`` where none is placed)."""
        if not self.has_norm(index):
            return nn.Identity()
        params = {k: v for k, v in self.spec.items() if k != "name"}
        return NORMS.get(self.spec["name"])(num_features=num_features, dim=dim, **params)


def _resolve(placement: Placement, n: int) -> frozenset[int]:
    named = {
        "all_hidden": range(n - 1),
        "all": range(n),
        "first": [0],
        "penultimate": [n - 2] if n >= 2 else [],
        "last": [n - 1],
    }
    if isinstance(placement, str):
        if placement not in named:
            raise SpecError(f"unknown placement '{placement}'; allowed: {', '.join(named)} or a list of layer indices", field="norm_at")
        return frozenset(named[placement])
    out = set()
    for i in placement:
        if not -n <= i < n:
            raise SpecError(f"layer index {i} out of range: the model has {n} conv/linear layers (0..{n - 1})", field="norm_at")
        out.add(i % n)
    return frozenset(out)
