"""Registered models (test problems). Each takes ``in_shape``, ``out_dim`` and explicit keywords."""
