"""The in-memory dataset every loader returns: tensors per split, plus what a model needs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from ablab.errors import DataError

SPLIT_SEED = 20240229  # fixed: the validation cut never depends on a run's seeds


@dataclass
class Split:
    """Examples ``x`` (N, *in_shape) and targets ``y``: (N,) int64 classes or (N, out_dim) float."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))

    def rows(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples and targets at ``index`` (index tensor or slice), examples as float32.

        uint8 examples are 8-bit pixel codes (see ``Dataset.to(..., compact=True)``), decoded by the
        loaders' own operation, ``float32(code) / 255``, so the batch is bitwise what a float32
        split would give.
        """
        x = self.x[index]
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255)
        return x, self.y[index]


def encode_pixels(x: torch.Tensor) -> torch.Tensor:
    """float32 values k/255 (as the image loaders make them) back to their uint8 codes k, exactly."""
    return x.mul(255).round_().to(torch.uint8)


@dataclass
class Dataset:
    """Named splits ('train', 'val', 'test') held as tensors; CPU until the engine moves them."""

    name: str
    splits: dict[str, Split]
    in_shape: tuple[int, ...]
    out_dim: int
    task: Literal["classification", "regression"] = "classification"
    # per-channel statistics of the training split, for the `normalize` augmentation
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    meta: dict = field(default_factory=dict)
    # every example value is k/255 for an integer k (8-bit images): storable as uint8 codes
    pixels8: bool = False

    @property
    def num_classes(self) -> int | None:
        return self.out_dim if self.task == "classification" else None

    def to(self, device: torch.device | str, compact: bool = False) -> "Dataset":
        """The dataset on ``device``. ``compact``: 8-bit image examples travel and stay as uint8
        codes (a quarter of the memory and of the copy); read batches through ``Split.rows``."""
        if compact and self.pixels8:
            splits = {k: Split(encode_pixels(s.x).to(device), s.y.to(device)) for k, s in self.splits.items()}
        else:
            splits = {k: s.to(device) for k, s in self.splits.items()}
        return dataclasses.replace(self, splits=splits)

    def check(self) -> "Dataset":
        """Shapes agree and labels are in range, else a DataError naming the split."""
        for key, s in self.splits.items():
            if s.x.shape[0] != s.y.shape[0]:
                raise DataError(
                    f"dataset '{self.name}' split '{key}': {s.x.shape[0]} examples but "
                    f"{s.y.shape[0]} targets"
                )
            if tuple(s.x.shape[1:]) != tuple(self.in_shape):
                raise DataError(
                    f"dataset '{self.name}' split '{key}': examples of shape "
                    f"{tuple(s.x.shape[1:])}, expected {tuple(self.in_shape)}"
                )
            if self.task == "classification" and s.y.numel():
                lo, hi = int(s.y.min()), int(s.y.max())
                if lo < 0 or hi >= self.out_dim:
                    raise DataError(
                        f"dataset '{self.name}' split '{key}': labels in [{lo}, {hi}], expected "
                        f"0..{self.out_dim - 1}"
                    )
        return self


def cut_validation(train: Split, n_val: int, seed: int = SPLIT_SEED) -> tuple[Split, Split]:
    """Split ``n_val`` examples off ``train`` with a fixed seed: (train', val)."""
    if not 0 <= n_val < len(train):
        raise DataError(f"cannot cut {n_val} validation examples from {len(train)} training examples")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])
