"""Readers for official dataset file formats; every failure is one DataError naming the file.

Readers return numpy arrays, cached per process (keyed by path, mtime and size) because a study
loads the same files for many runs. Cached arrays are read-only: copy before changing them.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Annotated, Any, Sequence

import numpy as np
import pandas as pd
from pydantic import AfterValidator

from ablab.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _must_exist(p: Path) -> Path:
    p = p.expanduser()
    if not p.exists():
        raise ValueError(f"path does not exist: {p}")
    return p


# A spec parameter naming a file or directory: validating a spec fails when it does not exist.
ExistingPath = Annotated[Path, AfterValidator(_must_exist)]

Stamp = tuple[tuple[str, int, int], ...]


def stamp(paths: Sequence[Path]) -> Stamp:
    """Cache key for files: (resolved path, mtime in ns, size) each, so a changed file misses."""
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError as err:
            raise DataError(f"{p}: cannot read file ({err.strerror})") from None
        out.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
    return tuple(out)


def require_dir(path: Path | str, what: str) -> Path:
    """``path`` as a Path if it is a directory, else a DataError saying what was expected."""
    path = Path(path).expanduser()
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise DataError(f"{path}: {state}; expected {what}")
    return path


def require_file(path: Path | str, what: str) -> Path:
    """``path`` as a Path if it is a file, else a DataError saying what was expected."""
    path = Path(path).expanduser()
    if not path.is_file():
        state = "is not a file" if path.exists() else "is missing"
        raise DataError(f"{path}: {state}; expected {what}")
    return path


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---- CIFAR python batches (pickle) -------------------------------------------------------------

# Only what a pickled numpy array needs: a CIFAR batch is never allowed to run other code.
_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (module, name): getattr(source, name)
        for module, source in (
            ("numpy.core.multiarray", _multiarray), ("numpy._core.multiarray", _multiarray),
        )
        for name in ("_reconstruct", "scalar")
    },
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _key(d: dict, key: str) -> Any:
    """``d[b'key']`` (python-2 pickles) or ``d['key']``; KeyError when neither is there."""
    if key.encode() in d:
        return d[key.encode()]
    return d[key]


def read_cifar_batch(
    path: Path, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR python batch: images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    path = require_file(path, "a CIFAR python batch file")
    return _read_cifar_batch(path, stamp([path]), label_key, num_classes)


@functools.lru_cache(maxsize=16)
def _read_cifar_batch(
    path: Path, _stamp: Stamp, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    expected = f"a pickled dict with b'data' (N×3072 uint8) and b'{label_key}'"
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # a corrupt pickle can raise almost anything
        raise DataError(f"{path}: not a readable CIFAR python batch "
                        f"({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}, expected {expected}")
    try:
        data, labels = _key(batch, "data"), _key(batch, label_key)
    except KeyError as err:
        raise DataError(f"{path}: no key {err}; expected {expected}") from None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072):
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: b'data' has shape {shape} / dtype {getattr(data, 'dtype', None)},"
                        f" expected N×3072 uint8")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'{label_key}' is not a list of integers") from None
    if len(y) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(y)} labels in b'{label_key}'")
    check_labels(path, y, num_classes)
    return _frozen(data.reshape(-1, 3, 32, 32)), _frozen(y)


def check_labels(path: Path, y: np.ndarray, num_classes: int) -> None:
    """Labels lie in 0..num_classes-1, else a DataError naming ``path``."""
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: labels in [{y.min()}, {y.max()}], expected 0..{num_classes - 1}")


# ---- idx (MNIST, Fashion-MNIST), optionally gzip-compressed ------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(
    path: Path, dtype: np.dtype | type | None = None, ndim: int | None = None
) -> np.ndarray:
    """An idx file (``.gz`` read as gzip): header 0 0 type ndim, big-endian uint32 dims, payload.

    With ``dtype``/``ndim`` given, the header's magic must announce exactly those.
    """
    path = require_file(path, "an idx file")
    return _read_idx(path, stamp([path]), None if dtype is None else np.dtype(dtype), ndim)


@functools.lru_cache(maxsize=16)
def _read_idx(path: Path, _stamp: Stamp, dtype: np.dtype | None, ndim: int | None) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an idx header")
    code, dims_n = raw[2], raw[3]
    if raw[:2] != b"\0\0" or code not in _IDX_TYPES:
        raise DataError(f"{path}: bad idx magic 0x{raw[:4].hex()}, expected 0x0000<type><ndim>")
    file_dtype = np.dtype(_IDX_TYPES[code])
    if (dtype is not None and file_dtype.newbyteorder("=") != dtype.newbyteorder("=")) or (
        ndim is not None and dims_n != ndim
    ):
        want_dtype = dtype if dtype is not None else file_dtype
        want_n = ndim if ndim is not None else dims_n
        raise DataError(f"{path}: idx magic 0x{raw[:4].hex()}, expected "
                        f"0x0000{_idx_code(want_dtype):02x}{want_n:02x} "
                        f"({want_dtype} with {want_n} dimensions)")
    header = 4 + 4 * dims_n
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes, expected {header})")
    dims = struct.unpack(f">{dims_n}I", raw[4:header])
    size = int(np.prod(dims, dtype=np.int64)) * file_dtype.itemsize
    if len(raw) - header != size:
        raise DataError(f"{path}: idx payload of {len(raw) - header} bytes, expected {size} "
                        f"for dimensions {dims}")
    arr = np.frombuffer(raw, dtype=file_dtype, offset=header).reshape(dims)
    return _frozen(arr.astype(file_dtype.newbyteorder("=")))


def _idx_code(dtype: np.dtype) -> int:
    for code, name in _IDX_TYPES.items():
        if np.dtype(name).newbyteorder("=") == dtype.newbyteorder("="):
            return code
    raise ValueError(f"no idx type code for {dtype}")


# ---- MATLAB .mat (SVHN) ------------------------------------------------------------------------

def read_mat(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Variables ``names`` of a MATLAB v4/v5/v7 .mat file (v7.3 is HDF5 and not supported)."""
    path = require_file(path, "a MATLAB .mat file")
    return _read_mat(path, stamp([path]), tuple(names))


@functools.lru_cache(maxsize=4)
def _read_mat(path: Path, _stamp: Stamp, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=list(names))
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; "
                        f"expected a v5/v7 .mat file") from None
    except Exception as err:  # scipy raises many types for corrupt files
        raise DataError(f"{path}: not a readable .mat file ({type(err).__name__}: {err})") from None
    missing = [n for n in names if n not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no variable {', '.join(missing)} (expected {', '.join(names)};"
                        f" found {', '.join(found) or 'none'})")
    return {n: _frozen(np.asarray(mat[n])) for n in names}


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN cropped-digits file: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 with 10 = digit 0.

    Returns images (N, 3, 32, 32) uint8 and digits (N,) int64 in 0..9.
    """
    mat = read_mat(path, ("X", "y"))
    x, y = mat["X"], mat["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X has shape {x.shape} / dtype {x.dtype}, "
                        f"expected 32×32×3×N uint8")
    y = y.reshape(-1)
    if len(y) != x.shape[3]:
        raise DataError(f"{path}: {x.shape[3]} images in X but {len(y)} labels in y")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels in [{y.min()}, {y.max()}], expected 1..10 (10 = digit 0)")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    return _frozen(images), _frozen(y.astype(np.int64) % 10)


# ---- image folders (Pillow) --------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image_folder(
    root: Path, size: int, grayscale: bool, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One sub-folder per class (sorted names = class indices) of PNG/JPEG images.

    Returns images (N, C, size, size) uint8 (C = 1 grayscale, else 3 RGB), labels (N,) int64 and
    the class names. With ``classes`` given (the training classes), labels index into them.
    Images are resized to size×size (bilinear) without keeping the aspect ratio.
    """
    root = require_dir(root, "one sub-folder of images per class")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{root}: no class folders; expected one sub-folder of images per class")
    names = list(classes) if classes is not None else found
    unknown = [c for c in found if c not in names]
    if unknown:
        raise DataError(f"{root}: class folders {unknown} are not among the training "
                        f"classes {names}")
    files: list[Path] = []
    labels: list[int] = []
    for name in found:
        images = sorted(f for f in (root / name).iterdir()
                        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{root / name}: no {'/'.join(IMAGE_SUFFIXES)} images in class folder")
        files += images
        labels += [names.index(name)] * len(images)
    x = _read_images(tuple(files), stamp(files), size, grayscale)
    return x, _frozen(np.asarray(labels, dtype=np.int64)), names


@functools.lru_cache(maxsize=4)
def _read_images(files: tuple[Path, ...], _stamp: Stamp, size: int, grayscale: bool) -> np.ndarray:
    from PIL import Image

    channels = 1 if grayscale else 3
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                img = img.convert("L" if grayscale else "RGB")
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                out[i] = np.asarray(img).reshape(size, size, channels)
        except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError … for bad files
            raise DataError(f"{f}: not a readable image ({type(err).__name__}: {err})") from None
    return _frozen(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))


# ---- CSV (pandas) ------------------------------------------------------------------------------

def read_csv(path: Path) -> pd.DataFrame:
    """A CSV file with a header row, as a DataFrame (a fresh copy: callers may change it)."""
    path = require_file(path, "a CSV file")
    return _read_csv(path, stamp([path])).copy()


@functools.lru_cache(maxsize=8)
def _read_csv(path: Path, _stamp: Stamp) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except Exception as err:  # ParserError, EmptyDataError, UnicodeDecodeError …
        raise DataError(f"{path}: not a readable CSV file ({type(err).__name__}: {err})") from None
    if df.empty:
        raise DataError(f"{path}: CSV file has a header but no rows")
    return df
