"""Additive Gaussian input noise, registered as augmentation ``gaussian_noise``."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ablab


@ablab.register_augmentation("gaussian_noise")
def gaussian_noise(dataset, std: Annotated[float, Field(ge=0.0)] = 0.1):
    """x + ε with ε ~ N(0, std²) per input value, drawn from the run's augment stream."""

    def add_noise(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + std * noise, y

    return add_noise
