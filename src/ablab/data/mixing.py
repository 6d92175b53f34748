"""Mixed-example augmentation (seed 002, ch. 2, §2.3): two images give one, labelled by the realised mixture.

Each method is registered in ``AUGMENTATIONS`` as ``(x, y, generator) -> (x̃, ỹ)`` on a whole batch.

Pairing (seed002.md §2.5, our choice): a batch of B images gives B mixed outputs. A random
permutation σ of the batch pairs x₁ = x[σ(k)] with x₂ = x[σ(k+1 mod B)], a random cyclic pairing:
every image is the first input of one pair and the second input of another, and never its own
partner when B ≥ 2 (a batch of one image is mixed with itself). So one epoch of ablab's sampler,
N images in batches of B, is N mixed outputs made from 2N source images, as in the authors' code
(which repeats the data twice per epoch and mixes consecutive pairs). The sampler is unchanged and
``batch_size`` counts mixed outputs. The other option in §2.5, pairs (i, i + B/2), would give B/2
outputs per step and N/2 per epoch. Partners always come from the same batch; the batch is a
uniform random subset, so this restricts nothing but the two uses of an image falling in one step.

Draws: σ, then every λ, cut, mask and offset, per pair, from the given (``augment``) generator on
x's device; no Python loop over examples. Labels: class indices become one-hot vectors (soft labels
pass through) and ỹ = w·y₁ + (1 − w)·y₂ with w the weight of x₁ in the realised mixture: the area
fraction taken from x₁ for cut methods, λ for mixup, BC+ (not p) and noisy mixup (the un-noised λ),
λ₃a₁ + (1 − λ₃)a₂ for the VH methods. Every training example is mixed. List the mix after crop and
flip: the seed found the order worth > 1 % accuracy on CIFAR-10 (L445). Evaluation never mixes.

Open items of seed002.md §6, each a parameter: ``std_eps`` (BC+, default 1e-3), ``sigma`` (noisy
mixup, default the thesis' √0.025; the authors' code used 0.025), ``cut`` (concat methods, default
the thesis' ⌊λH⌋ with λ ~ Beta(α, α); ``uniform_index``: the code's cut ~ U{0..H−1}), ``offset``
(intervals, default a random x₂ offset as in the code). Epochs count mixed outputs (above).
"""

from __future__ import annotations

import math
from typing import Annotated, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ablab.data.augment import MIX, Augmentation, _image_shape, staged
from ablab.data.base import Dataset
from ablab.errors import SpecError
from ablab.registry import AUGMENTATIONS

# (x₁, x₂, generator) -> (x̃, w): one output per pair and the weight w (B,) of x₁ in its label
PairMix = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]

Alpha = Annotated[float, Field(gt=0.0)]
Cut = Literal["floor_beta", "uniform_index"]
THESIS_SIGMA = math.sqrt(0.025)  # L439: "σ² … set to √0.025" read as variance 0.025 (seed002.md K1)
DEFAULT_STD_EPS = 1e-3


# ---- pairing and labels


def soft_labels(y: Tensor, num_classes: int | None) -> Tensor:
    """Class indices as one-hot float32 rows; soft labels and regression targets unchanged."""
    if y.is_floating_point():
        return y
    return F.one_hot(y, num_classes).to(torch.float32)


def mix_labels(y1: Tensor, y2: Tensor, w: Tensor) -> Tensor:
    """ỹ = w·y₁ + (1 − w)·y₂ per pair (Eq. 2.3's label rule, with w the x₁ weight of the mixture)."""
    w = w.to(y1.dtype).view(-1, *([1] * (y1.dim() - 1)))
    return w * y1 + (1 - w) * y2


def _pairwise(mix_pairs: PairMix, num_classes: int | None) -> Augmentation:
    """The batch augmentation: random cyclic pairs of the batch, mixed by ``mix_pairs``."""

    def mix(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        first = torch.randperm(x.shape[0], generator=generator, device=x.device)
        second = first.roll(-1)
        mixed, w = mix_pairs(x[first], x[second], generator)
        soft = soft_labels(y, num_classes)
        return mixed, mix_labels(soft[first], soft[second], w)

    mix.mix_pairs = mix_pairs  # type: ignore[attr-defined]  (the same draws on two given images: figures, tests)
    return staged(mix, MIX)


def _rescaled(mix: Augmentation) -> Augmentation:
    """Mark a method whose images are zero-mean and rescaled, off the inputs' range (a figure shows them on their own)."""
    mix.rescales = True  # type: ignore[attr-defined]
    return mix


# ---- draws (all per pair, batched on the device)


LOG_SPACE_BELOW = 1.0  # α below which λ is drawn from the gammas' logarithms (no underflow; see draw_beta)


def draw_beta(n: int, alpha: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """n draws of λ ~ Beta(α, α) as G₁ / (G₁ + G₂) with G ~ Gamma(α, 1); α = 1 is U(0, 1).

    For α < 1 the gammas are drawn as logarithms, log G = log G' + log(U)/α with G' ~ Gamma(α + 1)
    and U ~ U(0, 1], and λ = sigmoid(log G₁ − log G₂): in float32 both G underflow to 0 at
    small α (17.7 % of draws at α = 0.01), which a plain ratio turns into λ = 0.5; in log space λ goes
    to 0 or 1, the fair coin that Beta(α, α) tends to as α → 0. α ≥ 1 keeps the plain ratio.
    """
    if alpha >= LOG_SPACE_BELOW:
        gammas = torch._standard_gamma(torch.full((2, n), float(alpha), device=device), generator=generator)
        return (gammas[0] / (gammas[0] + gammas[1])).nan_to_num(0.5)
    shifted = torch._standard_gamma(torch.full((2, n), float(alpha) + 1.0, device=device), generator=generator)
    u = 1.0 - torch.rand((2, n), generator=generator, device=device)  # in (0, 1]: log u is finite
    log_g = shifted.log() + u.log() / alpha
    return torch.sigmoid(log_g[0] - log_g[1])


def _randint_below(high: Tensor, generator: torch.Generator) -> Tensor:
    """One integer in {0, …, high − 1} per element of ``high`` (int64, every bound ≥ 1), uniform."""
    u = torch.rand(high.shape, generator=generator, device=high.device)
    return (u * high).floor().long().minimum(high - 1)  # u·high can round up to high in float32


def _draw_cut(n: int, size: int, alpha: float, cut: Cut, generator: torch.Generator, device) -> Tensor:
    """How many leading rows (columns) come from x₁: ⌊λ·size⌋ (Eq. 2.5) or U{0..size−1} (the code)."""
    if cut == "uniform_index":
        return torch.randint(0, size, (n,), generator=generator, device=device)
    return (draw_beta(n, alpha, generator, device) * size).floor().long()


def _draw_interval(n: int, size: int, offset: str, generator: torch.Generator, device) -> tuple[Tensor, ...]:
    """An interval [lo, hi) per pair and the shift of its x₂ source (L427: lo uniform, then hi uniform).

    lo ~ U{0..size−1}, hi ~ U{lo..size}, so the length may be 0; the x₂ interval starts at
    o ~ U{0..size − length} (``random``) or at lo (``same``); the shift is o − lo.
    """
    lo = torch.randint(0, size, (n,), generator=generator, device=device)
    hi = lo + _randint_below(size - lo + 1, generator)
    if offset == "same":
        return lo, hi, torch.zeros_like(lo)
    return lo, hi, _randint_below(size - (hi - lo) + 1, generator) - lo


# ---- the image rules, given their draws (pure: tests and figures call them with chosen values)


def _per_pair(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def mixup_images(x1: Tensor, x2: Tensor, lam: Tensor) -> Tensor:
    """x̃ = λx₁ + (1 − λ)x₂ (Eq. 2.3); λ = 1 gives x₁ exactly."""
    lam = _per_pair(lam, x1)
    return lam * x1 + (1 - lam) * x2


def image_stats(x: Tensor, std_eps: float) -> tuple[Tensor, Tensor]:
    """Each image's scalar mean μ and σ = std + ε over all pixels and channels (population std, L371)."""
    flat = x.flatten(1)
    return flat.mean(1), flat.std(1, correction=0) + std_eps


def bc_plus_images(x1: Tensor, x2: Tensor, lam: Tensor, std_eps: float, centre: bool = True) -> Tensor:
    """BC+ (Eq. 2.4): [p(x₁ − μ₁) + (1 − p)(x₂ − μ₂)] / √(p² + (1 − p)²), p = 1/(1 + (σ₁/σ₂)(1 − λ)/λ).

    p is computed as λσ₂ / (λσ₂ + (1 − λ)σ₁), the same value, finite at λ = 0 and λ = 1 since σ > 0.
    ``centre=False`` leaves the means in (VH-BC+ centres the originals before concatenating).
    """
    mu1, s1 = image_stats(x1, std_eps)
    mu2, s2 = image_stats(x2, std_eps)
    lam = lam.to(s1.dtype)
    p = lam * s2 / (lam * s2 + (1 - lam) * s1)
    if centre:
        x1, x2 = x1 - _per_pair(mu1, x1), x2 - _per_pair(mu2, x2)
    return mixup_images(x1, x2, p) / _per_pair(torch.sqrt(p * p + (1 - p) * (1 - p)), x1)


def first_rows(cut: Tensor, height: int) -> Tensor:
    """Mask (B, 1, H, 1): row r < cut, the rows taken from x₁ by a vertical concat (Eq. 2.5)."""
    return (torch.arange(height, device=cut.device) < cut[:, None]).view(-1, 1, height, 1)


def first_columns(cut: Tensor, width: int) -> Tensor:
    """Mask (B, 1, 1, W): column c < cut, taken from x₁ by a horizontal concat (Eq. 2.6)."""
    return (torch.arange(width, device=cut.device) < cut[:, None]).view(-1, 1, 1, width)


def paste(x1: Tensor, x2: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """x₁ where ``mask`` holds, x₂ elsewhere, and the fraction of x₁ in the result (B,)."""
    per_pair = mask.flatten(1)
    fraction = per_pair.sum(1).to(torch.float32) / per_pair.shape[1]  # exact counts, one rounding
    return torch.where(mask, x1, x2), fraction


def vh_images(x1: Tensor, x2: Tensor, rows: Tensor, cols: Tensor, lam3: Tensor) -> Tensor:
    """VH-mixup (Eq. 2.7): λ₃·Vconcat(x₁, x₂; rows) + (1 − λ₃)·Hconcat(x₁, x₂; cols)."""
    _, _, h, w = x1.shape
    vertical = torch.where(first_rows(rows, h), x1, x2)
    horizontal = torch.where(first_columns(cols, w), x1, x2)
    return mixup_images(vertical, horizontal, lam3)


def vh_weight(rows: Tensor, cols: Tensor, lam3: Tensor, height: int, width: int) -> Tensor:
    """The x₁ weight of a VH mixture: λ₃a₁ + (1 − λ₃)a₂ with a₁ = rows/H, a₂ = cols/W (§2.1 of seed002.md)."""
    lam3 = lam3.to(torch.float32)
    return lam3 * (rows.to(torch.float32) / height) + (1 - lam3) * (cols.to(torch.float32) / width)


def shift(x: Tensor, offset: Tensor, dim: int) -> Tensor:
    """x at index i + offset (per pair) along ``dim`` (2: rows, 3: columns), clamped to the image."""
    n = x.shape[dim]
    index = (torch.arange(n, device=x.device) + offset[:, None]).clamp(0, n - 1)
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = n
    return x.gather(dim, index.view(shape).expand_as(x))


def noisy_mixup_images(x1: Tensor, x2: Tensor, lam: Tensor, noise: Tensor) -> Tensor:
    """Noisy mixup (L439): λ_rc = clip(λ + ℓ_rc, 0, 1) per pixel, x̃ = λ_rc·x₁ + (1 − λ_rc)·x₂."""
    lam_rc = (_per_pair(lam, noise) + noise).clamp(0.0, 1.0).to(x1.dtype)
    return lam_rc * x1 + (1 - lam_rc) * x2


# ---- registered methods


def first_of_pair(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The baseline's pair rule: x̃ = x₁, label weight 1 (the authors' ``first_example``)."""
    return x1, torch.ones(x1.shape[0], device=x1.device)


@AUGMENTATIONS.register("baseline")
def baseline(dataset: Dataset) -> Augmentation:
    """The baseline arm (seed 002 §2.3; the authors' first_example): the first image of each pair, label unchanged.

    With the random cyclic pairing every image of the batch is the first image of exactly one pair,
    so the outputs are the batch itself, permuted; the batch is returned as it is (no draw, class
    indices stay indices), so a baseline run is step for step a run without the step. An epoch is
    N outputs, each training image once, as for every method. The authors' code takes the first of
    consecutive pairs of the twice-repeated, shuffled data, so an image there appears 0, 1 or 2
    times per epoch (once on average); ours shows each exactly once.
    """

    def keep(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return x, y

    keep.mix_pairs = first_of_pair  # type: ignore[attr-defined]
    return keep


@AUGMENTATIONS.register("mixup")
def mixup(dataset: Dataset, alpha: Alpha = 1.0) -> Augmentation:
    """Mixup (Eq. 2.3): x̃ = λx₁ + (1 − λ)x₂, label weight λ, λ ~ Beta(α, α) per pair."""

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        lam = draw_beta(x1.shape[0], alpha, generator, x1.device)
        return mixup_images(x1, x2, lam), lam

    return _pairwise(mix_pairs, dataset.num_classes)


@AUGMENTATIONS.register("bc_plus")
def bc_plus(dataset: Dataset, alpha: Alpha = 1.0, std_eps: Annotated[float, Field(gt=0.0)] = DEFAULT_STD_EPS
            ) -> Augmentation:
    """BC+ (Eq. 2.4): per-image zero mean, mixed with p from λ and the stds σ + ε; label weight λ.

    λ ~ Beta(α, α) (α = 1 is the seed's U[0, 1]). ``std_eps`` is the "small constant" the seed added
    to avoid divergence (L476, value unstated): σ = population std + ε, in the input's units. The
    dataset normalisation of zero-meaned images that the authors' code used is a preprocessing
    choice of the spec (a ``normalize`` listed before this step).
    """

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        lam = draw_beta(x1.shape[0], alpha, generator, x1.device)
        return bc_plus_images(x1, x2, lam, std_eps), lam

    return _rescaled(_pairwise(mix_pairs, dataset.num_classes))


def _concat(dataset: Dataset, name: str, alpha: float, cut: Cut, dims: str) -> Augmentation:
    """Vertical (``rows``), horizontal (``cols``) or mixed (``both``) concatenation of each pair."""
    _image_shape(dataset, name)

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, _, h, w = x1.shape
        top = left = None
        if dims in ("rows", "both"):
            top = first_rows(_draw_cut(b, h, alpha, cut, generator, x1.device), h)
        if dims in ("cols", "both"):
            left = first_columns(_draw_cut(b, w, alpha, cut, generator, x1.device), w)
        # mixed concat: top-left and bottom-right from x₁ (L404)
        mask = top if left is None else left if top is None else top == left
        return paste(x1, x2, mask)

    return _pairwise(mix_pairs, dataset.num_classes)


@AUGMENTATIONS.register("vertical_concat")
def vertical_concat(dataset: Dataset, alpha: Alpha = 1.0, cut: Cut = "floor_beta") -> Augmentation:
    """Vertical concat (Eq. 2.5): the top rows from x₁, the rest from x₂; label weight the row fraction.

    ``cut``: ⌊λH⌋ rows with λ ~ Beta(α, α) (``floor_beta``, the thesis) or U{0..H−1} rows
    (``uniform_index``, the authors' code, which never takes all of x₁).
    """
    return _concat(dataset, "vertical_concat", alpha, cut, "rows")


@AUGMENTATIONS.register("horizontal_concat")
def horizontal_concat(dataset: Dataset, alpha: Alpha = 1.0, cut: Cut = "floor_beta") -> Augmentation:
    """Horizontal concat (Eq. 2.6): the left columns from x₁, the rest from x₂; label weight the column fraction.

    ``cut``: as for ``vertical_concat``, on columns.
    """
    return _concat(dataset, "horizontal_concat", alpha, cut, "cols")


@AUGMENTATIONS.register("mixed_concat")
def mixed_concat(dataset: Dataset, alpha: Alpha = 1.0, cut: Cut = "floor_beta") -> Augmentation:
    """Mixed concat (seed 002 §2.3): a 2×2 grid from a row and a column cut, top-left and bottom-right from x₁.

    Label weight a₁a₂ + (1 − a₁)(1 − a₂), a₁, a₂ the realised row and column fractions; ``cut``
    as for ``vertical_concat``, drawn independently for the rows and the columns.
    """
    return _concat(dataset, "mixed_concat", alpha, cut, "both")


@AUGMENTATIONS.register("random_2x2")
def random_2x2(dataset: Dataset, middle: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5) -> Augmentation:
    """Random 2×2 (seed 002 §2.3): a random 2×2 grid, each cell from x₁ or x₂; label weight the area from x₁.

    The two cut lines fall in the middle ``middle`` fraction of each axis (the seed's p = 0.5): a cut
    k ~ U{m..n−m−1}, m = ⌊(1 − middle)·n/2 + ½⌋. Each cell comes from x₁ with probability q,
    q ~ U(0, 1) per pair (the authors' code; the thesis says only "randomly decides").
    """
    _, h, w = _image_shape(dataset, "random_2x2")
    margins = [math.floor((1 - middle) * n / 2 + 0.5) for n in (h, w)]
    if any(n - 2 * m < 1 for n, m in zip((h, w), margins)):
        raise SpecError(f"the middle {middle} of a {h}×{w} image leaves no room for a cut", field="middle")

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, _, h, w = x1.shape
        mh, mw = (math.floor((1 - middle) * n / 2 + 0.5) for n in (h, w))
        rows = torch.randint(mh, h - mh, (b,), generator=generator, device=x1.device)
        cols = torch.randint(mw, w - mw, (b,), generator=generator, device=x1.device)
        q = torch.rand(b, 1, generator=generator, device=x1.device)
        cells = torch.rand(b, 4, generator=generator, device=x1.device) < q  # TL, TR, BL, BR
        below = ~first_rows(rows, h).view(b, h, 1)
        right = ~first_columns(cols, w).view(b, 1, w)
        cell = (2 * below + right).flatten(1)  # (B, H·W): the cell of each pixel
        return paste(x1, x2, cells.gather(1, cell).view(b, 1, h, w))

    return _pairwise(mix_pairs, dataset.num_classes)


def _vh(dataset: Dataset, name: str, alpha: float, cut: Cut, std_eps: float | None) -> Augmentation:
    """VH-mixup (``std_eps`` None) or VH-BC+ of independent vertical and horizontal concats of one pair."""
    _image_shape(dataset, name)

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, _, h, w = x1.shape
        rows = _draw_cut(b, h, alpha, cut, generator, x1.device)
        cols = _draw_cut(b, w, alpha, cut, generator, x1.device)
        lam3 = draw_beta(b, alpha, generator, x1.device)
        if std_eps is None:
            return vh_images(x1, x2, rows, cols, lam3), vh_weight(rows, cols, lam3, h, w)
        return vh_bc_plus_images(x1, x2, rows, cols, lam3, std_eps), vh_weight(rows, cols, lam3, h, w)

    return _pairwise(mix_pairs, dataset.num_classes)


def vh_bc_plus_images(x1: Tensor, x2: Tensor, rows: Tensor, cols: Tensor, lam3: Tensor, std_eps: float) -> Tensor:
    """VH-BC+ (L421): zero-mean x₁ and x₂, concatenate both ways, then BC+ of the two concats (no re-centring)."""
    z1 = x1 - _per_pair(x1.flatten(1).mean(1), x1)
    z2 = x2 - _per_pair(x2.flatten(1).mean(1), x2)
    _, _, h, w = x1.shape
    vertical = torch.where(first_rows(rows, h), z1, z2)
    horizontal = torch.where(first_columns(cols, w), z1, z2)
    return bc_plus_images(vertical, horizontal, lam3, std_eps, centre=False)


@AUGMENTATIONS.register("vh_mixup")
def vh_mixup(dataset: Dataset, alpha: Alpha = 1.0, cut: Cut = "floor_beta") -> Augmentation:
    """VH-mixup (Eq. 2.7): mixup with λ₃ of a vertical and a horizontal concat; label weight λ₃a₁ + (1 − λ₃)a₂.

    Both concats put x₁ first (top, left); their cuts and λ₃ ~ Beta(α, α) are independent.
    """
    return _vh(dataset, "vh_mixup", alpha, cut, None)


@AUGMENTATIONS.register("vh_bc_plus")
def vh_bc_plus(dataset: Dataset, alpha: Alpha = 1.0, cut: Cut = "floor_beta",
               std_eps: Annotated[float, Field(gt=0.0)] = DEFAULT_STD_EPS) -> Augmentation:
    """VH-BC+ (seed 002 §2.3): BC+ with λ₃ of the concats of the zero-meaned images; label weight λ₃a₁ + (1 − λ₃)a₂.

    The originals are zero-meaned before concatenating (the thesis' better option); p uses the
    stds of the two concats + ``std_eps``, and the concats are not centred again (the code).
    """
    return _rescaled(_vh(dataset, "vh_bc_plus", alpha, cut, std_eps))


@AUGMENTATIONS.register("random_square")
def random_square(dataset: Dataset, size: Annotated[int, Field(ge=1)] | None = None) -> Augmentation:
    """Random square (seed 002 §2.3): a square of x₁ replaced by a same-size patch of x₂ from a random place.

    Label weight 1 − patch area / HW. ``size``: the side in pixels, default half the shorter side
    (the seed's 16 on 32×32). The centre is uniform over the pixels and the square is clipped at the
    border (the code), so a patch can be smaller; the x₂ patch is uniform over the places it fits.
    """
    _, h, w = _image_shape(dataset, "random_square")
    side = min(h, w) // 2 if size is None else size
    if side > min(h, w) or side < 1:
        raise SpecError(f"a square of {side} pixels does not fit in the {h}×{w} images of "
                        f"'{dataset.name}'", field="size")

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, _, h, w = x1.shape
        inside = []
        for dim, n in ((2, h), (3, w)):
            centre = torch.randint(0, n, (b,), generator=generator, device=x1.device)
            lo = (centre - side // 2).clamp(min=0)
            hi = (centre - side // 2 + side).clamp(max=n)
            source = _randint_below(n - (hi - lo) + 1, generator)  # where the x₂ patch starts
            x2 = shift(x2, source - lo, dim)
            index = torch.arange(n, device=x1.device)
            inside.append((lo[:, None] <= index) & (index < hi[:, None]))
        square = inside[0].view(b, 1, h, 1) & inside[1].view(b, 1, 1, w)
        return paste(x1, x2, ~square)

    return _pairwise(mix_pairs, dataset.num_classes)


def _interval(dataset: Dataset, name: str, dim: int, offset: str) -> Augmentation:
    """An interval of rows (``dim`` 2) or columns (3) of x₁ replaced by as many of x₂'s."""
    _image_shape(dataset, name)

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, n = x1.shape[0], x1.shape[dim]
        lo, hi, source_shift = _draw_interval(b, n, offset, generator, x1.device)
        index = torch.arange(n, device=x1.device)
        outside = (index < lo[:, None]) | (index >= hi[:, None])
        shape = [b, 1, 1, 1]
        shape[dim] = n
        return paste(x1, shift(x2, source_shift, dim), outside.view(shape))

    return _pairwise(mix_pairs, dataset.num_classes)


Offset = Literal["random", "same"]


@AUGMENTATIONS.register("random_column_interval")
def random_column_interval(dataset: Dataset, offset: Offset = "random") -> Augmentation:
    """Random column interval (seed 002 §2.3): columns [lo, hi) of x₁ replaced by x₂'s; label weight (W − length)/W.

    lo ~ U{0..W−1}, then hi ~ U{lo..W}: the length may be 0 and may reach the last column (the
    code's hi stops one short). ``offset``: the x₂ columns start at a uniform place where they fit
    (``random``, the code; the thesis does not say) or at lo (``same``).
    """
    return _interval(dataset, "random_column_interval", 3, offset)


@AUGMENTATIONS.register("random_row_interval")
def random_row_interval(dataset: Dataset, offset: Offset = "random") -> Augmentation:
    """Random row interval (seed 002 §2.3): rows [lo, hi) of x₁ replaced by x₂'s; label weight (H − length)/H.

    Drawn as in ``random_column_interval``, on rows.
    """
    return _interval(dataset, "random_row_interval", 2, offset)


def _random_mask(dataset: Dataset, name: str, alpha: float, per: str) -> Augmentation:
    """Each row, column, pixel or element from x₁ with probability λ ~ Beta(α, α); weight the realised fraction."""
    _image_shape(dataset, name)

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, c, h, w = x1.shape
        shape = {"rows": (b, 1, h, 1), "columns": (b, 1, 1, w), "pixels": (b, 1, h, w), "elements": (b, c, h, w)}[per]
        lam = draw_beta(b, alpha, generator, x1.device)
        u = torch.rand(shape, generator=generator, device=x1.device)
        return paste(x1, x2, u < lam.view(b, 1, 1, 1))  # u < 1 always, so λ = 1 takes all of x₁

    return _pairwise(mix_pairs, dataset.num_classes)


@AUGMENTATIONS.register("random_rows")
def random_rows(dataset: Dataset, alpha: Alpha = 1.0) -> Augmentation:
    """Random rows (seed 002 §2.3): each row from x₁ with probability λ ~ Beta(α, α); label weight the fraction of rows."""
    return _random_mask(dataset, "random_rows", alpha, "rows")


@AUGMENTATIONS.register("random_columns")
def random_columns(dataset: Dataset, alpha: Alpha = 1.0) -> Augmentation:
    """Random columns (seed 002 §2.3): each column from x₁ with probability λ; label weight the fraction of columns."""
    return _random_mask(dataset, "random_columns", alpha, "columns")


@AUGMENTATIONS.register("random_pixels")
def random_pixels(dataset: Dataset, alpha: Alpha = 1.0) -> Augmentation:
    """Random pixels (seed 002 §2.3): each pixel (all channels) from x₁ with probability λ; label weight the realised fraction.

    The thesis labels with the mask's expected value λ; we use the realised mean, as the code does.
    """
    return _random_mask(dataset, "random_pixels", alpha, "pixels")


@AUGMENTATIONS.register("random_elements")
def random_elements(dataset: Dataset, alpha: Alpha = 1.0) -> Augmentation:
    """Random elements (seed 002 §2.3): each element (pixel and channel) from x₁ with probability λ; weight the realised fraction."""
    return _random_mask(dataset, "random_elements", alpha, "elements")


@AUGMENTATIONS.register("noisy_mixup")
def noisy_mixup(dataset: Dataset, alpha: Alpha = 1.0,
                sigma: Annotated[float, Field(ge=0.0)] = THESIS_SIGMA) -> Augmentation:
    """Noisy mixup (seed 002 §2.3): λ_rc = clip(λ + ℓ_rc, 0, 1), ℓ_rc ~ N(0, σ²) per pixel; label weight the un-noised λ.

    λ ~ Beta(α, α); the noise is shared by a pixel's channels. ``sigma`` defaults to the thesis'
    √0.025 ≈ 0.158 (variance 0.025, seed002.md K1); the authors' code used σ = 0.025.
    """
    _image_shape(dataset, "noisy_mixup")

    def mix_pairs(x1: Tensor, x2: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        b, _, h, w = x1.shape
        lam = draw_beta(b, alpha, generator, x1.device)
        noise = sigma * torch.randn(b, 1, h, w, generator=generator, device=x1.device)
        return noisy_mixup_images(x1, x2, lam, noise), lam

    return _pairwise(mix_pairs, dataset.num_classes)


# The 17 arms of the thesis' tables (Table 2.1 order: the baseline, prior work, then ours) and their names there.
TABLE_NAMES = {
    "baseline": "Baseline", "mixup": "Mixup", "bc_plus": "BC+", "random_elements": "Rand. Elems.",
    "random_pixels": "Rand. Pixels", "random_column_interval": "Rand. Col. Int.", "random_columns": "Rand. Cols",
    "horizontal_concat": "Horiz. Concat.", "random_rows": "Rand. Rows", "noisy_mixup": "Noisy Mixup",
    "random_row_interval": "Rand. Row Int.", "vertical_concat": "Vert. Concat.", "mixed_concat": "Mixed Concat.",
    "random_square": "Rand. Square", "random_2x2": "Rand. 2×2", "vh_bc_plus": "VH-BC+", "vh_mixup": "VH-Mixup",
}
METHODS = tuple(TABLE_NAMES)
