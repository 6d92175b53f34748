"""The picture grid of seed 002's Fig. 2.2: what each mixing arm makes of the same two images, drawn at report time.

Two test images of the study's dataset (the first, and the first of another class) go through the
run's own augment steps up to the mix, those evaluation sees too (``at_eval``: ``normalize``; the random
crop and flip are left out so both images stay recognisable), then through the arm's registered method
(``mix_pairs``: the same code and parameters the runs trained with) with a generator seeded ``FIGURE_SEED``.
Tiles share one grey/colour scale, the two inputs' range, except a method's that ``rescales`` (BC+ and
VH-BC+: zero-mean, rescaled outputs): each of those is shown on its own range. The PNG is the tiles themselves,
enlarged by pixel repetition, so a tile's pixels are the method's output; under each row of tiles a white band
of ``LABEL_PX`` pixels names each tile (its number and arm), drawn as text beside the pixels, never on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablab.data.base import Dataset
from ablab.registry import AUGMENTATIONS, DATASETS

COLUMNS = 6
GAP = 2  # background pixels between tiles (in source pixels, before enlarging)
LABEL_PX = 16  # the text band under each row of tiles, in the PNG's pixels
LABEL_CHARS = 20  # longer arm names are shortened with …
FIGURE_SEED = 1  # its first Beta(1, 1) draw on the CPU is λ ≈ 0.60: most tiles show both images


def two_images(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image and the first later one of a different class (float, (C, H, W))."""
    split = dataset.splits.get("test") or dataset.splits["train"]
    x, y = split.rows(slice(0, min(len(split), 256)))
    other = int(torch.nonzero(y != y[0])[0]) if bool((y != y[0]).any()) else 1
    return x[0].float(), x[other].float()


def _prepared(x: torch.Tensor, augment: list, dataset: Dataset) -> torch.Tensor:
    """One image (1, C, H, W) through the steps before the mix that evaluation sees too (``at_eval``)."""
    x, y, generator = x[None], torch.zeros(1, dtype=torch.long), torch.Generator()
    for step in (AUGMENTATIONS.create(s, dataset=dataset) for s in augment[:-1]):
        if getattr(step, "at_eval", False):
            x, y = step(x, y, generator)
    return x


def tiles(arms: list[tuple[str, list]], dataset: Dataset) -> tuple[list[str], list[torch.Tensor], list[bool]]:
    """(titles, tiles (C, H, W), own-range flags): image 1, image 2 as the first arm's mix sees them, then each arm."""
    x1, x2 = two_images(dataset)
    first = arms[0][1] if arms else [None]
    out = [_prepared(x1, first, dataset)[0], _prepared(x2, first, dataset)[0]]
    titles, own = ["image 1", "image 2"], [False, False]
    for label, augment in arms:
        mix = AUGMENTATIONS.create(augment[-1], dataset=dataset)
        a, b = _prepared(x1, augment, dataset), _prepared(x2, augment, dataset)
        mixed, _ = mix.mix_pairs(a, b, torch.Generator().manual_seed(FIGURE_SEED))
        titles.append(label)
        out.append(mixed[0])
        own.append(getattr(mix, "rescales", False))
    return titles, out, own


def _display(tile: torch.Tensor, lo: float, hi: float) -> np.ndarray:
    """(H, W, C) in [0, 1]: (tile − lo)/(hi − lo), clipped."""
    scaled = ((tile.double() - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    return scaled.permute(1, 2, 0).numpy()


def compose(images: list[torch.Tensor], own: list[bool], scale: int) -> np.ndarray:
    """The grid as one (rows·((H+gap)·scale + LABEL_PX), COLUMNS·(W+gap)·scale, C) array in [0, 1], white
    between tiles and in each row's label band."""
    lo = float(min(images[0].min(), images[1].min()))
    hi = float(max(images[0].max(), images[1].max()))
    c, h, w = images[0].shape
    rows = -(-len(images) // COLUMNS)
    grid = np.ones((rows * ((h + GAP) * scale + LABEL_PX), COLUMNS * (w + GAP) * scale, c))
    for i, (tile, alone) in enumerate(zip(images, own)):
        shown = _display(tile, float(tile.min()), float(tile.max())) if alone else _display(tile, lo, hi)
        grid[tile_box(i, (h, w), scale)] = shown.repeat(scale, 0).repeat(scale, 1)
    return grid


def tile_box(index: int, shape: tuple[int, int], scale: int) -> tuple[slice, slice]:
    """Where tile ``index`` of (H, W) images lies in the saved PNG (rows, columns)."""
    h, w = shape
    r, k = divmod(index, COLUMNS)
    top = r * ((h + GAP) * scale + LABEL_PX)
    return slice(top, top + h * scale), slice(k * (w + GAP) * scale, (k * (w + GAP) + w) * scale)


def label_anchor(index: int, shape: tuple[int, int], scale: int) -> tuple[float, float]:
    """(x, y) in PNG pixels, from the top left, where tile ``index``'s label is centred: under the tile."""
    rows, cols = tile_box(index, shape, scale)
    return (cols.start + cols.stop) / 2, rows.stop + (LABEL_PX + GAP * scale) / 2 - 1


def tile_label(index: int, title: str) -> str:
    """``3 baseline``: the tile's number (as the caption lists them) and its arm, shortened to fit."""
    text = f"{index + 1} {title}"
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def draw(arms: list[tuple[str, list]], data_spec: Any, path: Path) -> tuple[list[str], int]:
    """Write the grid PNG with a label under every tile; (titles in grid order, row-major, and the enlargement)."""
    from ablab.report.figures import new_figure, plain_text
    from ablab.files import write_atomic
    import io

    dataset = DATASETS.create(data_spec)
    titles, images, own = tiles(arms, dataset)
    shape = tuple(images[0].shape[-2:])
    scale = max(1, 96 // shape[-1])
    grid = compose(images, own, scale)
    height, width = grid.shape[:2]
    fig = new_figure(figsize=(width / 100, height / 100), dpi=100)
    if grid.shape[2] == 1:  # pixels as they are: no resampling, one pixel of the array per pixel of the PNG
        fig.figimage(grid[:, :, 0], origin="upper", cmap="gray", vmin=0.0, vmax=1.0)
    else:
        fig.figimage(grid, origin="upper")
    for i, title in enumerate(titles):
        x, y = label_anchor(i, shape, scale)
        fig.text(x / width, 1 - y / height, plain_text(tile_label(i, title)), ha="center", va="center",
                 fontsize=7, color="#222222")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(path, buf.getvalue())
    return titles, scale
