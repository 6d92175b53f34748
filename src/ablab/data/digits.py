"""scikit-learn's bundled ``digits``: 1797 8×8 grey images of 10 digits, no download needed."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt

from ablab.data.base import SPLIT_SEED, Dataset, Split
from ablab.errors import DataError
from ablab.registry import DATASETS


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 images, read from the file scikit-learn ships (importing sklearn costs ~1 s per process)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded 'digits' data comes with scikit-learn: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        data = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:  # a layout we do not know: let scikit-learn find its own file
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, target = bunch.images, bunch.target
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    return x, torch.tensor(target, dtype=torch.int64)


def _images(size: int, channels: int) -> torch.Tensor:
    """All 1797 images at ``size`` with ``channels`` (a new tensor: the cached originals are never changed)."""
    x, _ = _load_digits()
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.expand(-1, channels, -1, -1).contiguous()


@functools.lru_cache(maxsize=16)
def _split_plan(val_size: int, test_size: int, size: int, channels: int
                ) -> tuple[dict[str, torch.Tensor], tuple[float, float]]:
    """Each split's indices and the training split's mean and SD (ddof 0), computed once per process: small,
    and only read (the images themselves are rebuilt per call, so no large tensor stays cached)."""
    n = len(_load_digits()[1])
    if val_size < 0 or test_size < 0 or val_size + test_size >= n:
        from ablab.errors import SpecError

        raise SpecError(f"val_size + test_size must be in 0..{n - 1}, got {val_size} + {test_size}", field="val_size")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    split_idx = {"train": perm[test_size + val_size :].sort().values,
                 "val": perm[test_size : test_size + val_size].sort().values,
                 "test": perm[:test_size].sort().values}
    tx = _images(size, channels).index_select(0, split_idx["train"])
    return split_idx, (float(tx.mean()), float(tx.std(correction=0)))


@DATASETS.register("digits")
def digits(
    val_size: NonNegativeInt = 180,
    test_size: NonNegativeInt = 360,
    size: Annotated[int, Field(ge=8, le=64)] = 8,
    channels: Literal[1, 3] = 1,
) -> Dataset:
    """Embedded 8×8 digits (sklearn), fixed train/val/test split (1257/180/360 by default).

    ``size`` resizes bilinearly (e.g. 32 to run the CIFAR architectures on a CPU in seconds);
    ``channels: 3`` repeats the grey channel, mimicking RGB input.
    """
    split_idx, (mean, std) = _split_plan(val_size, test_size, size, channels)
    x, y = _images(size, channels), _load_digits()[1]
    # fresh tensors each call (a run may own and change its data); index_select gathers ~6x faster than x[idx]
    splits = {k: Split(x.index_select(0, i), y.index_select(0, i)) for k, i in split_idx.items()}
    return Dataset(
        "digits", splits, in_shape=(channels, size, size), out_dim=10, task="classification",
        mean=(mean,) * channels, std=(std,) * channels,
    ).check()
