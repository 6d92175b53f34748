"""Registered activations and shared building blocks for models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ablab.registry import ACTIVATIONS

ACTIVATIONS.register("relu", "Rectified linear unit max(0, x).")(nn.ReLU)
ACTIVATIONS.register("gelu", "Gaussian error linear unit.")(nn.GELU)
ACTIVATIONS.register("tanh", "Hyperbolic tangent.")(nn.Tanh)
ACTIVATIONS.register("sigmoid", "Logistic sigmoid.")(nn.Sigmoid)
ACTIVATIONS.register("elu", "Exponential linear unit.")(nn.ELU)
ACTIVATIONS.register("leaky_relu", "Leaky ReLU with negative slope 0.01.")(nn.LeakyReLU)
ACTIVATIONS.register("identity", "No activation (a linear model).")(nn.Identity)


ActivationName = ACTIVATIONS.name_type()


def create_activation(name: str) -> nn.Module:
    """A fresh activation module by registry name."""
    return ACTIVATIONS.get(name)()


def flat_size(in_shape: tuple[int, ...]) -> int:
    return math.prod(in_shape)


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's 'SAME': output ceil(size/stride), the odd pixel after.

    total = max((ceil(size/stride) − 1)·stride + kernel_size − size, 0); before = total // 2.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dims of ``x`` as TensorFlow's 'SAME' does (more bottom/right when odd)."""
    top, bottom = same_padding(x.shape[-2], kernel_size, stride)
    left, right = same_padding(x.shape[-1], kernel_size, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class SamePad2d(nn.Module):
    """Zero padding for a following unpadded conv so that it computes TensorFlow's 'SAME' conv."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_same(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2dSame(nn.MaxPool2d):
    """Max-pooling with TensorFlow 'SAME' padding: pads with −inf, the odd pixel bottom/right."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__(kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride, value=float("-inf")))
