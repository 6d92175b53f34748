"""A researcher's own components for ablab: a residual MLP and a noise augmentation.

Importing ``own_models.models`` and ``own_models.augment`` registers them (see ``study.yaml``).
"""
