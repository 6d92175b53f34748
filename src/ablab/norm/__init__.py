"""Normalization layers (registered in ``NORMS``) and the plan that places them in a model."""

from ablab.norm.plan import NormPlan, NormSpec, Placement
from ablab.norm import layers as _layers  # noqa: F401  (registers the norm layers)

__all__ = ["NormPlan", "NormSpec", "Placement"]
