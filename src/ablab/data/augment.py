"""Batched augmentation on the device: each is ``(x, y, generator) -> (x, y)`` on a whole batch.

Factories are registered in ``AUGMENTATIONS`` and get the ``Dataset`` (``in_shape``, ``mean``,
``std``) as context. Random draws use only the given generator, on ``x``'s device (which must be
the generator's), so the same generator state gives the same batch. Targets pass through.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ablab.data.base import Dataset
from ablab.errors import SpecError
from ablab.registry import AUGMENTATIONS

Augmentation = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


def compose(augs: Sequence[Augmentation]) -> Augmentation:
    """Apply ``augs`` in order, all drawing from the same generator; no augs is the identity."""
    augs = tuple(augs)

    def composed(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        for aug in augs:
            x, y = aug(x, y, generator)
        return x, y

    return composed


def create_augmentation(specs: Sequence[str | dict[str, Any]], dataset: Dataset) -> Augmentation:
    """The composition of the augmentations named in ``specs``, built for ``dataset``."""
    return compose([AUGMENTATIONS.create(spec, dataset=dataset) for spec in specs])


def _image_shape(dataset: Dataset, name: str) -> tuple[int, int, int]:
    if len(dataset.in_shape) != 3:
        raise SpecError(f"augmentation '{name}' needs images (C, H, W); dataset "
                        f"'{dataset.name}' has examples of shape {tuple(dataset.in_shape)}",
                        field="name")
    c, h, w = dataset.in_shape
    return c, h, w


def _identity(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return x, y


@AUGMENTATIONS.register("random_crop")
def random_crop(
    dataset: Dataset,
    padding: Annotated[int, Field(ge=0)] = 4,
    mode: Literal["zero", "reflect"] = "zero",
) -> Augmentation:
    """Pad each image by ``padding`` pixels per side, then cut a random window of its own size."""
    _, h, w = _image_shape(dataset, "random_crop")
    if mode == "reflect" and padding >= min(h, w):
        raise SpecError(f"reflect padding must be smaller than the image ({h}×{w}), got {padding}",
                        field="padding")
    if padding == 0:
        return _identity
    pad_mode = "constant" if mode == "zero" else "reflect"
    span = 2 * padding + 1  # window offsets 0..2·padding in each direction

    def crop(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding), mode=pad_mode)
        top = torch.randint(0, span, (b,), generator=generator, device=x.device)
        left = torch.randint(0, span, (b,), generator=generator, device=x.device)
        # two gathers: rows top..top+h-1 of each image, then columns left..left+w-1
        rows = top[:, None] + torch.arange(h, device=x.device)
        x = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, padded.shape[3]))
        cols = left[:, None] + torch.arange(w, device=x.device)
        return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w)), y

    return crop


@AUGMENTATIONS.register("hflip")
def hflip(dataset: Dataset, p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5) -> Augmentation:
    """Mirror each image left-right with probability ``p``."""
    _image_shape(dataset, "hflip")

    def flip(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        chosen = torch.rand(x.shape[0], generator=generator, device=x.device) < p
        return torch.where(chosen.view(-1, 1, 1, 1), x.flip(-1), x), y

    return flip


@AUGMENTATIONS.register("normalize")
def normalize(
    dataset: Dataset, mean: list[float] | None = None, std: list[float] | None = None
) -> Augmentation:
    """(x − mean) / std per channel (feature for vectors); default: the dataset's train stats."""
    channels = dataset.in_shape[0]
    mean = list(mean if mean is not None else dataset.mean or [])
    if std is not None and any(s <= 0 for s in std):
        raise SpecError(f"std values must be positive, got {std}", field="std")
    # a constant channel of the data (std 0) is only centred
    std = list(std if std is not None else [s if s > 0 else 1.0 for s in dataset.std or []])
    for key, values in (("mean", mean), ("std", std)):
        if not values:
            raise SpecError(f"dataset '{dataset.name}' has no per-channel {key}; give '{key}'",
                            field=key)
        if len(values) != channels:
            raise SpecError(f"{key} needs {channels} values (one per channel of "
                            f"{tuple(dataset.in_shape)}), got {len(values)}", field=key)
    shape = (channels,) + (1,) * (len(dataset.in_shape) - 1)
    on_device: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def norm(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        key = (x.device, x.dtype)
        if key not in on_device:  # copy the statistics to each device once
            on_device[key] = tuple(  # type: ignore[assignment]
                torch.tensor(v, dtype=x.dtype, device=x.device).view(shape) for v in (mean, std)
            )
        m, s = on_device[key]
        return (x - m) / s, y

    norm.at_eval = True  # type: ignore[attr-defined]  (a preprocessing step: evaluation sees it too)
    return norm
