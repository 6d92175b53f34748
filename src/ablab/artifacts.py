"""Every artifact's name and file format: what a run's files are called, and how they become bytes and back.

Workers write these files (checkpoints, evaluators' outputs, probe series); the store and its
readers (analysis, the report) find them by the names below and decode them here, without
importing the training code. Names are part of the store: a changed name orphans stored files
(``tests/pins`` holds their digests). Formats: ``.npy`` and ``.npz`` without pickles;
checkpoints are ``torch.save`` dicts of tensors and plain values, read with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch

CHECKPOINT_KIND = "checkpoint"  # the full training state after an epoch (ablab.train.checkpoint)
PREDICTIONS_KIND = "predictions"  # a split's logits float32 [N, ...] (evaluators predictions, ensemble)
LABELS_KIND = "labels"  # a split's class labels int64 [N], beside its predictions
ACTIVATIONS_KIND = "activations"  # chosen layers' outputs on a split's first examples (evaluator activations)
NORM_PARAMS_FILE = "probe_norm_params.npz"  # γ and β of every norm layer over steps (probe norm_params)
RELU_SPARSITY_FILE = "probe_relu_sparsity.npz"  # zeroed fraction of every ReLU over steps (probe relu_sparsity)
OUTPUT_RANGE_FILE = "probe_output_range.npz"  # a norm layer's normalized output range, train vs eval (probe output_range)
CHECKPOINT_FORMAT = 1  # the "format" entry of a checkpoint dict


def checkpoint_name(epoch: int) -> str:
    """The artifact name of a run's checkpoint after ``epoch``."""
    return f"checkpoint_e{epoch:04d}.pt"


def predictions_name(split: str, epoch: int) -> str:
    """The artifact name of a split's stored outputs at an epoch."""
    return f"predictions_{split}_e{epoch:04d}.npy"


def labels_name(split: str, epoch: int) -> str:
    """The artifact name of a split's class labels stored beside its predictions at an epoch."""
    return f"labels_{split}_e{epoch:04d}.npy"


def tta_predictions_name(prefix: str, split: str, epoch: int) -> str:
    """The artifact name of a TTA evaluator's averaged logits (kind ``tta_predictions_kind(prefix)``)."""
    return f"predictions_{prefix}_{split}_e{epoch:04d}.npy"


def tta_predictions_kind(prefix: str) -> str:
    """The artifact kind of a TTA evaluator's averaged logits: ``tta_flip`` → ``tta_flip_predictions``."""
    return f"{prefix}_predictions"


def activations_name(split: str, epoch: int) -> str:
    """The artifact name of the ``activations`` evaluator's file: one array [K, features] per layer, plus meta."""
    return f"activations_{split}_e{epoch:04d}.npz"


def save_npy(array: np.ndarray) -> bytes:
    """One array as ``.npy`` bytes (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """The array of ``save_npy`` bytes; no pickles."""
    return np.load(io.BytesIO(data), allow_pickle=False)


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


def save_checkpoint(state: dict[str, Any]) -> bytes:
    """A checkpoint dict (tensors and plain values) as bytes, its ``format`` entry first."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    return buf.getvalue()


def load_checkpoint(data: bytes) -> dict[str, Any]:
    """A checkpoint's contents (tensors on the CPU); only plain data is accepted (no pickled code)."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not an ablab checkpoint (unknown format)")
    return state
