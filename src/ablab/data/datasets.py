"""Registered datasets: image benchmarks from official files, CSV tables, bundled/generated data.

Every loader returns a checked ``Dataset`` on the CPU with splits 'train', 'val' and 'test'.
Images are float32 in [0, 1], shape (N, C, H, W); ``mean``/``std`` are the per-channel statistics
of the training split after the validation cut. Tabular features are standardized with the
training split's statistics only. Validation (and, where the data has no test set, test) examples
are cut with the fixed ``SPLIT_SEED``, never with a run's seed. Benchmarks of fixed size take a
count (``val_size``, as DeepOBS does); data of any size takes fractions of all examples.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from ablab.data.base import SPLIT_SEED, Dataset, Split, cut_validation
from ablab.data.formats import (
    ExistingPath,
    check_labels,
    read_cifar_batch,
    read_csv,
    read_idx,
    read_image_folder,
    read_svhn_mat,
    require_dir,
    require_file,
)
from ablab.errors import DataError
from ablab.registry import DATASETS

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# the synthetic dataset's sizes: a study asking for more is refused at validation, not by the memory
SYNTHETIC_MAX_SAMPLES, SYNTHETIC_MAX_FEATURES, SYNTHETIC_MAX_CLASSES = 10_000_000, 100_000, 10_000
SYNTHETIC_MAX_VALUES = 100_000_000  # n_samples × n_features (800 MB of float64)

TEST_SEED = SPLIT_SEED + 1  # the test cut (data without a test set) is independent of the val cut


# ---- shared construction -----------------------------------------------------------------------

def create_image_dataset(
    name: str, train: Split, test: Split, num_classes: int, val_size: int, meta: dict
) -> Dataset:
    """A Dataset from uint8 image splits (N, C, H, W): cut val, train stats, scale to [0, 1]."""
    if val_size >= len(train):
        raise DataError(f"dataset '{name}' ({meta.get('source')}): val_size={val_size} leaves no "
                        f"training examples out of {len(train)}")
    train, val = cut_validation(train, val_size)
    mean, std = _channel_stats(train.x)
    splits = {k: Split(s.x.to(torch.float32).div_(255), s.y)
              for k, s in (("train", train), ("val", val), ("test", test))}
    return Dataset(name, splits, tuple(train.x.shape[1:]), num_classes,
                   mean=mean, std=std, meta=meta, pixels8=True).check()


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images, on the [0, 1] scale."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        p = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        p /= p.sum()
        m = float((p * values).sum())
        means.append(m)
        stds.append(math.sqrt(float((p * (values - m) ** 2).sum())))
    return tuple(means), tuple(stds)


def _tensor(a: np.ndarray, dtype: type) -> torch.Tensor:
    """A tensor that owns its memory (the readers' cached arrays are read-only)."""
    a = np.asarray(a, dtype=dtype)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _uint8_split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(_tensor(x, np.uint8), _tensor(y, np.int64))


def create_tabular_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: Literal["classification", "regression"],
    num_classes: int | None,
    test_fraction: float,
    val_fraction: float,
    standardize: np.ndarray | bool = True,
    standardize_target: bool = False,
    meta: dict | None = None,
) -> Dataset:
    """A Dataset from features (N, F) and targets: class indices (N,) or values (N,) / (N, T).

    Test and val are cut as fractions of all N examples (test first, with its own fixed seed, so
    changing ``val_fraction`` keeps the test set). Columns selected by ``standardize`` (a bool or a
    per-column mask) and, if asked, regression targets become (v − mean) / std with the training
    split's mean and population std (a constant column keeps std 1).
    """
    meta = dict(meta or {})
    n = len(x)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    if n - n_test - n_val < 2:
        raise DataError(f"dataset '{name}' ({meta.get('source', name)}): test_fraction="
                        f"{test_fraction} and val_fraction={val_fraction} leave "
                        f"{n - n_test - n_val} of {n} examples for training")
    if task == "classification":
        targets = _tensor(y, np.int64).reshape(-1)
    else:
        targets = _tensor(y, np.float64).reshape(n, -1)
    full = Split(_tensor(x, np.float64), targets)
    rest, test = cut_validation(full, n_test, seed=TEST_SEED)
    train, val = cut_validation(rest, n_val)
    splits = {"train": train, "val": val, "test": test}

    mask = np.broadcast_to(np.asarray(standardize, dtype=bool), x.shape[1:])
    mask = torch.from_numpy(mask.copy())
    if mask.any():
        m, s = _column_stats(train.x[:, mask])
        for split in splits.values():
            split.x[:, mask] = (split.x[:, mask] - m) / s
        meta["standardized"] = {"columns": torch.nonzero(mask).view(-1).tolist(),
                                "mean": m.tolist(), "std": s.tolist()}
    if task == "regression" and standardize_target:
        m, s = _column_stats(train.y)
        for split in splits.values():
            split.y.sub_(m).div_(s)
        meta["target_mean"], meta["target_std"] = m.tolist(), s.tolist()

    mean, std = _column_stats(train.x)
    out = {k: Split(s.x.float(), s.y if task == "classification" else s.y.float())
           for k, s in splits.items()}
    out_dim = num_classes if task == "classification" else int(targets.shape[1])
    return Dataset(name, out, (int(x.shape[1]),), int(out_dim), task,
                   mean=tuple(mean.tolist()), std=tuple(std.tolist()), meta=meta).check()


def _column_stats(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, s = v.mean(0), v.std(0, unbiased=False)
    return m, torch.where(s > 0, s, torch.ones_like(s))


# ---- CIFAR -------------------------------------------------------------------------------------

def _batch_dir(path: Path, subdir: str, markers: tuple[str, ...], what: str) -> Path:
    """``path/subdir`` if it exists, else ``path`` itself if it holds one of ``markers``."""
    path = require_dir(path, f"a directory holding '{subdir}/' ({what})")
    if (path / subdir).is_dir():
        return path / subdir
    if any((path / m).exists() for m in markers):
        return path
    raise DataError(f"{path}: no '{subdir}/' directory and no {' or '.join(markers)} in it; "
                    f"expected {what}")


def _numbered_batches(root: Path, prefix: str) -> list[Path]:
    """``prefix1``, ``prefix2`` … with no gap (the official CIFAR-10 set has 1..5)."""
    found = {p.name[len(prefix):] for p in root.glob(f"{prefix}*")}
    numbers = sorted(int(s) for s in found if s.isdigit())
    if not numbers:
        raise DataError(f"{root}: no {prefix}1; expected batches {prefix}1..5 and test_batch")
    gaps = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if gaps:
        raise DataError(f"{root}: missing {', '.join(prefix + str(g) for g in gaps)} "
                        f"(found {', '.join(prefix + str(k) for k in numbers)})")
    return [root / f"{prefix}{k}" for k in numbers]


@DATASETS.register("cifar10")
def load_cifar10(path: ExistingPath, val_size: NonNegativeInt = 10_000) -> Dataset:
    """CIFAR-10 python batches: 50k train (val_size cut for validation), 10k test, 10 classes."""
    what = "CIFAR-10 python batches data_batch_1..5 and test_batch"
    root = _batch_dir(Path(path), "cifar-10-batches-py", ("data_batch_1", "test_batch"), what)
    files = _numbered_batches(root, "data_batch_")
    parts = [read_cifar_batch(f, "labels", 10) for f in files]
    test_file = require_file(root / "test_batch", what)
    x, y = (np.concatenate([p[k] for p in parts]) for k in (0, 1))
    train = _uint8_split(x, y)
    test = _uint8_split(*read_cifar_batch(test_file, "labels", 10))
    meta = {"source": str(root), "train_batches": len(files)}
    return create_image_dataset("cifar10", train, test, 10, val_size, meta)


@DATASETS.register("cifar100")
def load_cifar100(
    path: ExistingPath,
    val_size: NonNegativeInt = 10_000,
    label_mode: Literal["fine", "coarse"] = "fine",
) -> Dataset:
    """CIFAR-100 python files: 50k train (val_size cut for val), 10k test, 100 fine/20 coarse."""
    what = "CIFAR-100 python files 'train' and 'test'"
    root = _batch_dir(Path(path), "cifar-100-python", ("train", "test"), what)
    num_classes = 100 if label_mode == "fine" else 20
    key = f"{label_mode}_labels"
    train = _uint8_split(*read_cifar_batch(require_file(root / "train", what), key, num_classes))
    test = _uint8_split(*read_cifar_batch(require_file(root / "test", what), key, num_classes))
    meta = {"source": str(root), "label_mode": label_mode}
    return create_image_dataset("cifar100", train, test, num_classes, val_size, meta)


# ---- MNIST, Fashion-MNIST (idx) ----------------------------------------------------------------

def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / stem}: missing (also as .gz); expected the four idx files "
                    f"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                    f"t10k-labels-idx1-ubyte (each optionally .gz)")


def _load_idx_dataset(name: str, path: Path, val_size: int) -> Dataset:
    root = require_dir(path, "a directory with the idx files train-images-idx3-ubyte[.gz] …")
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        image_file = _idx_file(root, f"{prefix}-images-idx3-ubyte")
        label_file = _idx_file(root, f"{prefix}-labels-idx1-ubyte")
        images = read_idx(image_file, np.uint8, 3)
        labels = read_idx(label_file, np.uint8, 1).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"{image_file}: {len(images)} images but {label_file} has "
                            f"{len(labels)} labels")
        check_labels(label_file, labels, 10)
        splits[split] = _uint8_split(images[:, None], labels)
    meta = {"source": str(root)}
    return create_image_dataset(name, splits["train"], splits["test"], 10, val_size, meta)


@DATASETS.register("mnist")
def load_mnist(path: ExistingPath, val_size: NonNegativeInt = 10_000) -> Dataset:
    """MNIST idx files: 60k train (val_size cut for validation), 10k test, 1×28×28, 10 digits."""
    return _load_idx_dataset("mnist", Path(path), val_size)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(path: ExistingPath, val_size: NonNegativeInt = 10_000) -> Dataset:
    """Fashion-MNIST idx files: 60k train (val_size cut for val), 10k test, 1×28×28, 10 kinds."""
    return _load_idx_dataset("fashion_mnist", Path(path), val_size)


# ---- SVHN (.mat) -------------------------------------------------------------------------------

@DATASETS.register("svhn")
def load_svhn(path: ExistingPath, val_size: NonNegativeInt = 6_000, extra: bool = False) -> Dataset:
    """SVHN cropped digits (.mat): 73,257 train (+531,131 extra; val_size cut), 26,032 test.

    The default val_size of 6,000 is the validation size of Goodfellow et al. (2013, maxout), cut
    here from the training file (plus extra_32x32.mat when ``extra``); label 10 means digit 0.
    """
    what = "train_32x32.mat and test_32x32.mat (SVHN format 2)"
    root = require_dir(path, f"a directory with {what}")
    names = ["train_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    parts = [read_svhn_mat(require_file(root / n, what)) for n in names]
    x = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    y = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
    test = _uint8_split(*read_svhn_mat(require_file(root / "test_32x32.mat", what)))
    meta = {"source": str(root), "extra": extra}
    return create_image_dataset("svhn", _uint8_split(x, y), test, 10, val_size, meta)


# ---- image folders -----------------------------------------------------------------------------

@DATASETS.register("image_folder")
def load_image_folder(
    path: ExistingPath,
    size: PositiveInt = 32,
    grayscale: bool = False,
    test_fraction: Fraction = 0.2,
    val_fraction: Fraction = 0.1,
) -> Dataset:
    """PNG/JPEG images in train/<class>/ (and test/<class>/), resized to size×size; sorted classes.

    Without a test/ folder, ``test_fraction`` of train/ becomes the test split (fixed seed);
    ``val_fraction`` of the remaining training images is cut for validation.
    """
    root = require_dir(path, "a directory with train/<class>/ image folders")
    x, y, classes = read_image_folder(root / "train", size, grayscale)
    train = _uint8_split(x, y)
    if (root / "test").is_dir():
        tx, ty, _ = read_image_folder(root / "test", size, grayscale, classes)
        test = _uint8_split(tx, ty)
    else:
        n_test = round(test_fraction * len(train))
        if n_test >= len(train):
            raise DataError(f"{root}: test_fraction={test_fraction} leaves no training images")
        train, test = cut_validation(train, n_test, seed=TEST_SEED)
    meta = {"source": str(root), "classes": classes}
    n_val = round(val_fraction * len(train))
    return create_image_dataset("image_folder", train, test, len(classes), n_val, meta)


# ---- CSV ---------------------------------------------------------------------------------------

@DATASETS.register("csv")
def load_csv(
    path: ExistingPath,
    target: str,
    task: Literal["classification", "regression"],
    features: list[str] | None = None,
    drop: list[str] = [],
    test_fraction: Fraction = 0.2,
    val_fraction: Fraction = 0.1,
    standardize_target: bool = True,
) -> Dataset:
    """A CSV table: non-numeric features one-hot, numeric ones standardized with train-split stats.

    ``features`` None takes every column but ``target`` and ``drop``. Classification targets
    become indices of their sorted distinct values (``meta['classes']``); regression targets are
    standardized with train-split stats when ``standardize_target`` (``meta['target_mean']`` …).
    """
    path = require_file(path, "a CSV file")
    df = read_csv(path)
    columns = [str(c) for c in df.columns]
    asked = [target, *(features or []), *drop]
    missing = [c for c in dict.fromkeys(asked) if c not in columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))}; "
                        f"the columns are {', '.join(columns)}")
    if target in drop or (features is not None and target in features):
        raise DataError(f"{path}: target column '{target}' is also listed in features/drop")
    chosen = features if features is not None else [c for c in columns if c != target]
    chosen = [c for c in chosen if c not in drop]
    if not chosen:
        raise DataError(f"{path}: no feature columns left (target '{target}', drop {drop})")
    empty = [c for c in [target, *chosen] if df[c].isna().any()]
    if empty:
        raise DataError(f"{path}: missing values in column {', '.join(map(repr, empty))}; "
                        f"fill them or drop the column")
    _refuse_infinite(path, df, [target, *chosen])

    blocks, names, numeric = [], [], []
    for c in chosen:
        col = df[c]
        if pd.api.types.is_numeric_dtype(col):
            blocks.append(col.to_numpy(np.float64)[:, None])
            names.append(c)
            numeric.append(True)
        else:
            text = col.astype(str).to_numpy()
            levels = sorted(set(text))
            blocks.append((text[:, None] == np.asarray(levels)[None, :]).astype(np.float64))
            names += [f"{c}={v}" for v in levels]
            numeric += [False] * len(levels)
    x = np.concatenate(blocks, axis=1)
    meta: dict = {"source": str(path), "features": names, "target": target}

    col = df[target]
    if task == "classification":
        classes = _sorted_values(col)
        if len(classes) < 2:
            raise DataError(f"{path}: target column '{target}' has {len(classes)} distinct "
                            f"value(s); classification needs at least 2")
        y = pd.Categorical(col, categories=classes).codes.astype(np.int64)
        meta["classes"] = [str(c) for c in classes]
        num_classes: int | None = len(classes)
    else:
        if not pd.api.types.is_numeric_dtype(col):
            raise DataError(f"{path}: regression target column '{target}' is not numeric "
                            f"(dtype {col.dtype})")
        y, num_classes = col.to_numpy(np.float64), None
    return create_tabular_dataset(
        "csv", x, y, task=task, num_classes=num_classes, test_fraction=test_fraction,
        val_fraction=val_fraction, standardize=np.asarray(numeric),
        standardize_target=standardize_target, meta=meta,
    )


def _refuse_infinite(path: Path, df: pd.DataFrame, columns: list[str]) -> None:
    """A DataError naming the first numeric column holding ±inf (``inf``, ``-inf`` or an overflowing 1e999)."""
    for c in columns:
        if pd.api.types.is_numeric_dtype(df[c]):
            values = df[c].to_numpy(np.float64)
            bad = np.flatnonzero(np.isinf(values))
            if len(bad):
                raise DataError(f"{path}: infinite value {values[bad[0]]} in column '{c}' ({len(bad)} row(s), the first "
                                f"data row {bad[0] + 1}); replace them or drop the column")


def _sorted_values(col: pd.Series) -> list:
    values = list(col.unique())
    try:
        return sorted(values)
    except TypeError:  # mixed types
        return sorted(values, key=str)


# ---- scikit-learn's bundled datasets and a generator ------------------------------------------

@functools.lru_cache(maxsize=None)
def _sklearn_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as sk

    loaders = {
        "wine": sk.load_wine,
        "breast_cancer": sk.load_breast_cancer,
        "diabetes": functools.partial(sk.load_diabetes, scaled=False),
    }
    x, y = loaders[name](return_X_y=True)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@DATASETS.register("wine")
def load_wine(test_fraction: Fraction = 0.2, val_fraction: Fraction = 0.1) -> Dataset:
    """UCI wine (scikit-learn bundled): 178 examples, 13 features, 3 classes."""
    x, y = _sklearn_arrays("wine")
    return create_tabular_dataset("wine", x, y, task="classification", num_classes=3,
                                  test_fraction=test_fraction, val_fraction=val_fraction,
                                  meta={"source": "sklearn.datasets.load_wine"})


@DATASETS.register("breast_cancer")
def load_breast_cancer(test_fraction: Fraction = 0.2, val_fraction: Fraction = 0.1) -> Dataset:
    """Breast cancer Wisconsin (scikit-learn bundled): 569 examples, 30 features, 2 classes."""
    x, y = _sklearn_arrays("breast_cancer")
    return create_tabular_dataset("breast_cancer", x, y, task="classification", num_classes=2,
                                  test_fraction=test_fraction, val_fraction=val_fraction,
                                  meta={"source": "sklearn.datasets.load_breast_cancer"})


@DATASETS.register("diabetes")
def load_diabetes(test_fraction: Fraction = 0.2, val_fraction: Fraction = 0.1) -> Dataset:
    """Diabetes regression (scikit-learn bundled): 442 × 10; target standardized with train stats.

    Features and the target are standardized with the training split's statistics, so MSE is
    in units of the training target's variance; ``meta['target_mean']``/``['target_std']`` undo it.
    """
    x, y = _sklearn_arrays("diabetes")
    return create_tabular_dataset("diabetes", x, y, task="regression", num_classes=None,
                                  test_fraction=test_fraction, val_fraction=val_fraction,
                                  standardize_target=True,
                                  meta={"source": "sklearn.datasets.load_diabetes(scaled=False)"})


@DATASETS.register("synthetic")
def load_synthetic(
    n_samples: Annotated[int, Field(ge=10, le=SYNTHETIC_MAX_SAMPLES)] = 1000,
    n_features: Annotated[int, Field(gt=0, le=SYNTHETIC_MAX_FEATURES)] = 2,
    n_classes: Annotated[int, Field(ge=2, le=SYNTHETIC_MAX_CLASSES)] = 2,
    noise: Annotated[float, Field(ge=0.0)] = 1.0,
    seed: int = 0,
    test_fraction: Fraction = 0.2,
    val_fraction: Fraction = 0.1,
) -> Dataset:
    """Gaussian-mixture classification: centres ~ N(0, 4·I), example = its centre + noise·N(0, I).

    ``seed`` fixes the generated data (it is part of the data's definition, not a run seed);
    classes are balanced; features are not standardized.
    """
    if n_samples * n_features > SYNTHETIC_MAX_VALUES:
        raise DataError(f"synthetic: n_samples × n_features = {n_samples:,} × {n_features:,} values exceeds the limit "
                        f"of {SYNTHETIC_MAX_VALUES:,} ({SYNTHETIC_MAX_VALUES * 8 / 1e9:.1f} GB in memory); "
                        "make one of them smaller")
    # RandomState's streams are frozen across numpy versions (Generator's are not): same seed,
    # same data forever.
    rng = np.random.RandomState(seed)
    centres = 2.0 * rng.standard_normal((n_classes, n_features))
    y = rng.permutation(np.arange(n_samples) % n_classes)
    x = centres[y] + noise * rng.standard_normal((n_samples, n_features))
    return create_tabular_dataset("synthetic", x, y, task="classification", num_classes=n_classes,
                                  test_fraction=test_fraction, val_fraction=val_fraction,
                                  standardize=False, meta={"source": f"synthetic(seed={seed})"})
