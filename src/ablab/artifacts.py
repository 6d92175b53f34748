"""Artifact file formats and names: how arrays become bytes in the store, and back.

The probes (``ablab.train.probes``) write these files; readers (the report, analysis) find them
by the names below and decode them with ``load_npz`` without importing the training code.
"""

from __future__ import annotations

import io
import json

import numpy as np

NORM_PARAMS_FILE = "probe_norm_params.npz"  # γ and β of every norm layer over steps (probe norm_params)
RELU_SPARSITY_FILE = "probe_relu_sparsity.npz"  # zeroed fraction of every ReLU over steps (probe relu_sparsity)
ACTIVATIONS_KIND = "activations"  # chosen layers' outputs on a split's first examples (evaluator activations)


def activations_name(split: str, epoch: int) -> str:
    """The artifact name of the ``activations`` evaluator's file: one array [K, features] per layer, plus meta."""
    return f"activations_{split}_e{epoch:04d}.npz"


def save_npz(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """Arrays plus a JSON ``meta`` entry in one ``.npz`` (read back with ``load_npz``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def load_npz(data: bytes | str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the ``meta`` dict of a ``save_npz`` file (bytes or a path); no pickles."""
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(z["__meta__"].tobytes().decode()) if "__meta__" in z.files else {}
    return arrays, meta
