"""Writers of small files in each official dataset format, shared by the tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def make_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    """Random uint8 images (N, C, H, W) whose first pixel is the image's index (a unique id)."""
    x = np.random.RandomState(seed).randint(0, 256, (n, channels, size, size)).astype(np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x


def write_cifar_batch(path: Path, x: np.ndarray, labels: dict[str, list[int]], protocol: int = 2):
    """A CIFAR python batch: dict with b'data' N×3072 uint8 and b'<label key>' lists."""
    batch = {b"batch_label": b"testing batch", b"data": x.reshape(len(x), -1),
             b"filenames": [f"img_{i}.png".encode() for i in range(len(x))]}
    batch.update({k.encode(): list(map(int, v)) for k, v in labels.items()})
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def write_cifar10_folder(root: Path, per_batch: int, rng: np.random.Generator) -> Path:
    """A fake CIFAR-10 in the official pickle layout, ``root/cifar-10-batches-py``: five training batches
    and a test batch of ``per_batch`` random images each (``make_images`` seeds 0..5), labels drawn from
    ``rng``. Returns ``root``, the folder a spec's ``data.path`` names."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate(CIFAR10_BATCHES):
        write_cifar_batch(folder / name, make_images(per_batch, 3, 32, i), {"labels": rng.integers(0, 10, per_batch).tolist()})
    return root


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An idx file (gzip-compressed when the name ends in .gz)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    dtype = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    raw = bytes([0, 0, codes[dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_svhn_mat(path: Path, x: np.ndarray, digits: np.ndarray) -> None:
    """SVHN format 2: X (32, 32, 3, N) uint8 and y (N, 1) with digit 0 stored as 10."""
    y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
    scipy.io.savemat(path, {"X": x.transpose(2, 3, 1, 0), "y": y})


def write_png(path: Path, img: np.ndarray) -> None:
    """An image (C, H, W) uint8 as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.transpose(1, 2, 0).squeeze(-1) if img.shape[0] == 1
                    else img.transpose(1, 2, 0)).save(path)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


