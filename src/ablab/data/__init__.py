"""Datasets (registered in ``DATASETS``), splits, samplers and batched augmentation."""

from ablab.data.base import Dataset, Split, cut_validation

__all__ = ["Dataset", "Split", "cut_validation"]
