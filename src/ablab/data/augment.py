"""Batched augmentation on the device: each is ``(x, y, generator) -> (x, y)`` on a whole batch.

Factories are registered in ``AUGMENTATIONS`` and get the ``Dataset`` (``in_shape``, ``mean``,
``std``) as context. Random draws use only the given generator, on ``x``'s device (which must be
the generator's), so the same generator state gives the same batch. Targets pass through.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal, Sequence, Union

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ablab.data.base import Dataset
from ablab.errors import SpecError
from ablab.registry import AUGMENTATIONS

Augmentation = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]

# What a built step does, as its ``stage`` attribute, for validation's order rules (ablab.validate):
# a mix runs after every crop and flip; a colour change runs before normalize.
SPATIAL, COLOUR, NORMALIZE, MIX = "spatial", "colour", "normalize", "mix"


def staged(aug: Augmentation, stage: str) -> Augmentation:
    """``aug`` with its ``stage`` (SPATIAL, COLOUR, NORMALIZE or MIX) declared."""
    aug.stage = stage  # type: ignore[attr-defined]
    return aug


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
    """Pad each image by 'padding' pixels per side, then cut a random window of its own size."""
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

    return staged(crop, SPATIAL)


@AUGMENTATIONS.register("hflip")
def hflip(dataset: Dataset, p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5) -> Augmentation:
    """Mirror each image left-right with probability 'p'."""
    _image_shape(dataset, "hflip")

    def flip(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        chosen = torch.rand(x.shape[0], generator=generator, device=x.device) < p
        return torch.where(chosen.view(-1, 1, 1, 1), x.flip(-1), x), y

    return staged(flip, SPATIAL)


# A jitter strength: v means factors in [max(0, 1 − v), 1 + v]; a pair [lo, hi] is the range itself
# (torchvision's ColorJitter convention).
NonNegative = Annotated[float, Field(ge=0.0)]
JitterRange = Union[NonNegative, tuple[NonNegative, NonNegative]]

BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2  # columns of the factors, values of the order
# PIL's RGB → "L" (ITU-R 601-2 luma), in 16-bit fixed point: L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16
GREY_WEIGHTS_16 = (19595, 38470, 7471)


def _factor_range(value: float | tuple[float, float], key: str) -> tuple[float, float]:
    if isinstance(value, tuple):
        lo, hi = value
        if lo > hi:
            raise SpecError(f"{key} range [{lo}, {hi}] has its minimum above its maximum", field=key)
        return float(lo), float(hi)
    return max(0.0, 1.0 - value), 1.0 + value


def grey_levels(x: Tensor, eight_bit: bool = False) -> Tensor:
    """Grey image (B, 1, H, W): PIL's 0.299 R + 0.587 G + 0.114 B (one channel: the image itself).

    ``eight_bit``: x holds integer levels 0..255 and the grey level is PIL's rounded integer.
    """
    if x.shape[1] == 1:
        return x
    (wr, wg, wb), r, g, b = GREY_WEIGHTS_16, x[:, 0:1], x[:, 1:2], x[:, 2:3]
    if not eight_bit:  # weights k / 2¹⁶ are exact in float32; Python scalars need no device copy
        return r * (wr / 65536) + g * (wg / 65536) + b * (wb / 65536)
    # integers below 2²⁴, so float32 holds every sum exactly; / 2¹⁶ is exact too
    return (r * wr + g * wg + b * wb + 32768).div_(65536).floor_()


def _mean_grey(grey: Tensor, eight_bit: bool) -> Tensor:
    """The image's mean grey level (B, 1, 1, 1); ``eight_bit``: rounded to an integer, as PIL does."""
    if not eight_bit:
        return grey.mean((1, 2, 3), keepdim=True)
    n = grey[0].numel()
    total = grey.to(torch.int64).sum((1, 2, 3), keepdim=True)
    return torch.div(2 * total + n, 2 * n, rounding_mode="floor").to(grey.dtype)  # ⌊mean + ½⌋


def jitter_colors(x: Tensor, factors: Tensor, order: Tensor, eight_bit: bool = False) -> Tensor:
    """Brightness, contrast and saturation blends on each image of ``x`` (values in [0, 1]), in its own order.

    Each step is PIL's ``ImageEnhance`` (what torchvision's ColorJitter runs on PIL images):
    x ← clip(f·x + (1 − f)·d, 0, 1) with the degenerate image d = 0 (brightness), the image's mean
    grey level (contrast) or its grey image (saturation). ``factors`` (B, 3): f for (brightness,
    contrast, saturation); ``order`` (B, 3): a permutation of 0, 1, 2 per image, applied left to
    right. ``eight_bit``: on 8-bit images (values k/255) compute as PIL does on uint8: grey levels
    and the contrast mean rounded to integers, each step's result truncated to an integer level.
    """
    b = x.shape[0]
    if eight_bit:
        x = (x * 255.0).round_()  # the 8-bit codes, exact
    for step in range(order.shape[1]):
        op = order[:, step].view(b, 1, 1, 1)
        f = factors.gather(1, order[:, step : step + 1]).view(b, 1, 1, 1).to(x.dtype)
        grey = grey_levels(x, eight_bit)
        mean = _mean_grey(grey, eight_bit)
        degenerate = torch.where(op == SATURATION, grey, torch.where(op == CONTRAST, mean, 0.0))
        if eight_bit:  # PIL's float32 arithmetic, then the cast to uint8 (truncation)
            x = (degenerate + f * (x - degenerate)).clamp_(0.0, 255.0).trunc_()
        else:  # the same blend written so that f = 1 is exactly the identity
            x = (f * x + (1 - f) * degenerate).clamp_(0.0, 1.0)
    return x / 255.0 if eight_bit else x


@AUGMENTATIONS.register("color_jitter")
def color_jitter(
    dataset: Dataset,
    brightness: JitterRange = 0.0,
    contrast: JitterRange = 0.0,
    saturation: JitterRange = 0.0,
    eight_bit: bool = False,
) -> Augmentation:
    """Scale brightness, contrast and saturation by random factors per image, in a random order per image.

    torchvision's ``ColorJitter`` on PIL images, as DeepOBS' CIFAR pipeline runs it (after the
    flip, before ``ToTensor``/``Normalize``): per image, f ~ U[lo, hi] for each sub-transform and a
    uniformly random order of the three; the blends are ``jitter_colors``'. A strength v means
    [max(0, 1 − v), 1 + v]. Expects pixels in [0, 1]: list it before ``normalize``. ``eight_bit``
    (8-bit datasets only): PIL's integer rounding, bitwise; without it the result is in float,
    about 1.5 levels (of 255) brighter on average than PIL's truncating arithmetic.
    """
    c, _, _ = _image_shape(dataset, "color_jitter")
    if c not in (1, 3):
        raise SpecError(f"color_jitter needs RGB or grey images (3 or 1 channels); dataset "
                        f"'{dataset.name}' has {c}", field="name")
    if eight_bit and not dataset.pixels8:
        raise SpecError(f"eight_bit needs 8-bit images (values k/255); dataset '{dataset.name}' "
                        f"has other values: use eight_bit: false", field="eight_bit")
    ranges = [_factor_range(v, k) for k, v in
              (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))]
    lows, highs = zip(*ranges)
    on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def jitter(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b = x.shape[0]
        if x.device not in on_device:  # copy the ranges to each device once
            lo = torch.tensor(lows, dtype=torch.float32, device=x.device)
            on_device[x.device] = (lo, torch.tensor(highs, dtype=torch.float32, device=x.device) - lo)
        lo, span = on_device[x.device]
        factors = lo + span * torch.rand(b, 3, generator=generator, device=x.device)
        # the argsort of i.i.d. uniforms is a uniformly random permutation, drawn per image on the device
        order = torch.rand(b, 3, generator=generator, device=x.device).argsort(dim=1)
        return jitter_colors(x, factors, order, eight_bit), y

    return staged(jitter, COLOUR)


@AUGMENTATIONS.register("normalize")
def normalize(
    dataset: Dataset, mean: list[float] | None = None, std: list[float] | None = None
) -> Augmentation:
    """(x − mean) / std per channel (feature for vectors); default: the train split's mean and population SD (ddof 0)."""
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

    def inverse(x: Tensor) -> Tensor:
        """x · std + mean: the pixels back from a normalized batch (to float rounding; attacks need pixels)."""
        norm(x[:0], x[:0], None)  # the statistics on x's device
        m, s = on_device[(x.device, x.dtype)]
        return x * s + m

    norm.at_eval = True  # type: ignore[attr-defined]  (a preprocessing step: evaluation sees it too)
    norm.inverse = inverse  # type: ignore[attr-defined]
    return staged(norm, NORMALIZE)
