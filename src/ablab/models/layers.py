"""Registered activations and shared building blocks for models."""

from __future__ import annotations

import math

from torch import nn

from ablab.registry import ACTIVATIONS

ACTIVATIONS.register("relu", "Rectified linear unit max(0, x).")(nn.ReLU)
ACTIVATIONS.register("gelu", "Gaussian error linear unit.")(nn.GELU)
ACTIVATIONS.register("tanh", "Hyperbolic tangent.")(nn.Tanh)
ACTIVATIONS.register("sigmoid", "Logistic sigmoid.")(nn.Sigmoid)
ACTIVATIONS.register("elu", "Exponential linear unit.")(nn.ELU)
ACTIVATIONS.register("leaky_relu", "Leaky ReLU with negative slope 0.01.")(nn.LeakyReLU)
ACTIVATIONS.register("identity", "No activation (a linear model).")(nn.Identity)


def create_activation(name: str) -> nn.Module:
    """A fresh activation module by registry name."""
    return ACTIVATIONS.get(name)()


def flat_size(in_shape: tuple[int, ...]) -> int:
    return math.prod(in_shape)
