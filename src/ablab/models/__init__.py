"""Registered models (test problems). Each takes ``in_shape``, ``out_dim`` and explicit keywords."""

from ablab.models import convnets, mlp, resnets  # noqa: F401  (registers on import)
