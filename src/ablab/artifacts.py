"""Artifact file formats: how arrays and tensors become bytes in the store, and back.

Readers (the report, analysis) use these without importing the training code.
"""

from __future__ import annotations

import io
import json

import numpy as np


def save_npz(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """Arrays plus a JSON ``meta`` entry in one ``.npz`` (read back with ``load_npz``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def load_npz(data: bytes | str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(z["__meta__"].tobytes().decode()) if "__meta__" in z.files else {}
    return arrays, meta
