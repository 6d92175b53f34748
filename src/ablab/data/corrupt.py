"""Randomisation tests of Zhang et al. (2017): random labels and shuffled pixels."""

from __future__ import annotations

import dataclasses

import torch

from ablab.data.base import Dataset, Split


def corrupt_dataset(data: Dataset, label_fraction: float, shuffle_pixels: bool, seed: int) -> Dataset:
    """Replace ``label_fraction`` of the training labels by uniform random classes; optionally
    apply one fixed pixel permutation to every example of every split (the same for all runs
    with this ``seed``). Validation and test labels stay true, so test accuracy shows what generalises.
    """
    if label_fraction <= 0 and not shuffle_pixels:
        return data
    g = torch.Generator().manual_seed(seed)
    splits = dict(data.splits)
    if shuffle_pixels:
        n_pixels = int(torch.tensor(data.in_shape[1:]).prod()) if len(data.in_shape) > 1 else data.in_shape[0]
        perm = torch.randperm(n_pixels, generator=g)

        def shuffle(x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(x.shape[0], -1, n_pixels) if len(data.in_shape) > 1 else x
            return flat[..., perm].reshape(x.shape)

        splits = {k: Split(shuffle(s.x), s.y) for k, s in splits.items()}
    if label_fraction > 0:
        if data.task != "classification":
            from ablab.errors import SpecError

            raise SpecError("random labels need a classification task", field="corrupt.label_fraction")
        train = splits["train"]
        n = len(train)
        chosen = torch.randperm(n, generator=g)[: round(label_fraction * n)]
        y = train.y.clone()
        y[chosen] = torch.randint(0, data.out_dim, (len(chosen),), generator=g)
        splits["train"] = Split(train.x, y)
    meta = {**data.meta, "corrupt": {"label_fraction": label_fraction, "shuffle_pixels": shuffle_pixels, "seed": seed}}
    return dataclasses.replace(data, splits=splits, meta=meta)
