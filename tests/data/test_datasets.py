"""Registered datasets read back tiny files in each official format exactly; damage is a DataError."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ablab.data import datasets  # noqa: F401  (registers the datasets)
from ablab.data import formats
from ablab.data.base import Dataset
from ablab.errors import DataError, SpecError
from ablab.registry import DATASETS
from fileformats import make_images, truncate, write_cifar_batch, write_idx, write_png, write_svhn_mat

SPLITS = {"train", "val", "test"}


def ids_of(x: torch.Tensor) -> np.ndarray:
    """The id each test image carries in its first pixel (see ``make_images``)."""
    return (x[:, 0, 0, 0] * 255).round().long().numpy()


def assert_exact(ds: Dataset, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every split holds original images (as float32 / 255) with their labels; returns ids."""
    ids = {}
    for key, split in ds.splits.items():
        i = ids_of(split.x)
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert torch.equal(split.x, torch.from_numpy(images[i]).float() / 255)
        assert torch.equal(split.y, torch.from_numpy(labels[i]).long())
        ids[key] = i
    return ids


def assert_train_stats(ds: Dataset) -> None:
    x = ds.splits["train"].x.double()
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    assert np.allclose(ds.mean, x.mean(dims).numpy(), atol=1e-6)
    assert np.allclose(ds.std, x.std(dims, unbiased=False).numpy(), atol=1e-6)


# ---- CIFAR -------------------------------------------------------------------------------------

@pytest.fixture
def cifar10(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """cifar-10-batches-py/ with 2 training batches of 20 images and a test batch of 10."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    x, y = make_images(50, 3, 32, seed=0), np.random.RandomState(0).randint(0, 10, 50)
    for k, (a, b) in enumerate([(0, 20), (20, 40)], start=1):
        write_cifar_batch(root / f"data_batch_{k}", x[a:b], {"labels": y[a:b]})
    write_cifar_batch(root / "test_batch", x[40:], {"labels": y[40:]})
    return root, x, y


@pytest.mark.parametrize("parent", [True, False])
def test_cifar10_round_trip(cifar10, parent):
    root, x, y = cifar10
    ds = DATASETS.create({"name": "cifar10", "path": str(root.parent if parent else root),
                          "val_size": 8})
    assert set(ds.splits) == SPLITS and ds.in_shape == (3, 32, 32) and ds.out_dim == 10
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [32, 8, 10]
    ids = assert_exact(ds, x, y)
    assert sorted([*ids["train"], *ids["val"]]) == list(range(40))
    assert sorted(ids["test"]) == list(range(40, 50))
    assert_train_stats(ds)


def test_validation_split_is_fixed(cifar10):
    root = cifar10[0]
    torch.manual_seed(0)
    first = datasets.load_cifar10(root, val_size=8)
    formats._read_cifar_batch.cache_clear()
    torch.manual_seed(1)  # the global seed must not matter
    second = datasets.load_cifar10(root, val_size=8)
    assert torch.equal(first.splits["val"].x, second.splits["val"].x)
    assert list(ids_of(first.splits["val"].x)) == list(ids_of(second.splits["val"].x))


def test_cifar10_empty_val_and_too_large_val(cifar10):
    root = cifar10[0]
    ds = datasets.load_cifar10(root, val_size=0)
    assert len(ds.splits["val"]) == 0 and len(ds.splits["train"]) == 40
    with pytest.raises(DataError, match="val_size=40 leaves no training examples"):
        datasets.load_cifar10(root, val_size=40)


@pytest.mark.parametrize(
    "damage, culprit, message",
    [
        (lambda r: truncate(r / "data_batch_2"), "data_batch_2", "not a readable CIFAR"),
        (lambda r: (r / "test_batch").unlink(), "test_batch", "is missing"),
        (lambda r: (r / "data_batch_1").rename(r / "data_batch_3"), "", "missing data_batch_1"),
        (lambda r: write_cifar_batch(r / "data_batch_1", make_images(2, 3, 32, 1),
                                     {"labels": [0, 10]}), "data_batch_1", "expected 0..9"),
        (lambda r: [p.unlink() for p in r.iterdir()], "", "no 'cifar-10-batches-py/'"),
    ],
)
def test_cifar10_damage(cifar10, damage, culprit, message):
    root = cifar10[0]
    damage(root)
    with pytest.raises(DataError, match=message) as err:
        datasets.load_cifar10(root, val_size=8)
    assert str(root / culprit if culprit else root) in str(err.value)


@pytest.fixture
def cifar100(tmp_path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.RandomState(1)
    x, fine = make_images(30, 3, 32, seed=1), rng.randint(0, 100, 30)
    coarse = fine // 5
    for name, sl in (("train", slice(0, 24)), ("test", slice(24, 30))):
        write_cifar_batch(root / name, x[sl], {"fine_labels": fine[sl], "coarse_labels": coarse[sl]})
    return root, x, fine, coarse


@pytest.mark.parametrize("label_mode, classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_round_trip(cifar100, label_mode, classes):
    root, x, fine, coarse = cifar100
    ds = datasets.load_cifar100(root.parent, val_size=4, label_mode=label_mode)
    assert ds.out_dim == classes and [len(ds.splits[k]) for k in ("train", "val", "test")] == [20, 4, 6]
    assert_exact(ds, x, fine if label_mode == "fine" else coarse)


def test_cifar100_missing_test_file(cifar100):
    root = cifar100[0]
    (root / "test").unlink()
    with pytest.raises(DataError, match="is missing") as err:
        datasets.load_cifar100(root, val_size=4)
    assert str(root / "test") in str(err.value)


# ---- MNIST, Fashion-MNIST ----------------------------------------------------------------------

def write_mnist(root: Path, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    root.mkdir(exist_ok=True)
    x, y = make_images(30, 1, 28, seed=2), np.random.RandomState(2).randint(0, 10, 30)
    suffix = ".gz" if gz else ""
    for prefix, sl in (("train", slice(0, 24)), ("t10k", slice(24, 30))):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", x[sl, 0])
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", y[sl].astype(np.uint8))
    return x, y


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, name, gz):
    x, y = write_mnist(tmp_path, gz)
    ds = DATASETS.create({"name": name, "path": str(tmp_path), "val_size": 4})
    assert ds.name == name and ds.in_shape == (1, 28, 28) and ds.out_dim == 10
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [20, 4, 6]
    ids = assert_exact(ds, x, y)
    assert sorted(ids["test"]) == list(range(24, 30))
    assert_train_stats(ds)


@pytest.mark.parametrize(
    "damage, culprit, message",
    [
        (lambda r: write_idx(r / "train-labels-idx1-ubyte", np.zeros((24, 1), np.uint8)),
         "train-labels-idx1-ubyte", "expected 0x00000801"),
        (lambda r: truncate(r / "t10k-images-idx3-ubyte", 0.9), "t10k-images-idx3-ubyte",
         "idx payload"),
        (lambda r: write_idx(r / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8)),
         "t10k-images-idx3-ubyte", "6 images but"),
        (lambda r: write_idx(r / "t10k-labels-idx1-ubyte", np.full(6, 10, np.uint8)),
         "t10k-labels-idx1-ubyte", r"labels in \[10, 10\]"),
        (lambda r: (r / "train-images-idx3-ubyte").unlink(), "train-images-idx3-ubyte", "missing"),
    ],
)
def test_mnist_damage(tmp_path, damage, culprit, message):
    write_mnist(tmp_path, gz=False)
    damage(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        datasets.load_mnist(tmp_path, val_size=4)
    assert str(tmp_path / culprit) in str(err.value)


# ---- SVHN --------------------------------------------------------------------------------------

def test_svhn_round_trip_and_extra(tmp_path):
    x, digits = make_images(40, 3, 32, seed=3), np.arange(40) % 10
    write_svhn_mat(tmp_path / "train_32x32.mat", x[:20], digits[:20])
    write_svhn_mat(tmp_path / "extra_32x32.mat", x[20:30], digits[20:30])
    write_svhn_mat(tmp_path / "test_32x32.mat", x[30:], digits[30:])
    ds = datasets.load_svhn(tmp_path, val_size=5)
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [15, 5, 10]
    ids = assert_exact(ds, x, digits)  # label 10 in the file reads back as digit 0
    assert sorted([*ids["train"], *ids["val"]]) == list(range(20))
    with_extra = datasets.load_svhn(tmp_path, val_size=5, extra=True)
    ids = assert_exact(with_extra, x, digits)
    assert sorted([*ids["train"], *ids["val"]]) == list(range(30))
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DataError, match="is missing") as err:
        datasets.load_svhn(tmp_path, val_size=5)
    assert str(tmp_path / "test_32x32.mat") in str(err.value)


# ---- image folders -----------------------------------------------------------------------------

def write_folder(root: Path, x: np.ndarray, classes: list[str]) -> None:
    for i, img in enumerate(x):
        write_png(root / classes[i % len(classes)] / f"{i:03d}.png", img)


def test_image_folder_with_test_dir(tmp_path):
    x = make_images(30, 3, 8, seed=4)
    classes = ["zebra", "ant", "moth"]
    write_folder(tmp_path / "train", x[:24], classes)
    write_folder(tmp_path / "test", x[24:], classes[:2])  # test may lack a class
    ds = datasets.load_image_folder(tmp_path, size=8, val_fraction=0.25)
    assert ds.meta["classes"] == ["ant", "moth", "zebra"] and ds.out_dim == 3
    labels = np.array([sorted(classes).index(classes[i % 3]) for i in range(24)]
                      + [sorted(classes).index(classes[i % 2]) for i in range(6)])
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [18, 6, 6]
    ids = assert_exact(ds, x, labels)
    assert sorted(ids["test"]) == list(range(24, 30))
    assert_train_stats(ds)


def test_image_folder_cuts_test_without_test_dir(tmp_path):
    x = make_images(20, 3, 8, seed=5)
    write_folder(tmp_path / "train", x, ["a", "b"])
    ds = datasets.load_image_folder(tmp_path, size=8, test_fraction=0.25, val_fraction=0.2)
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [12, 3, 5]
    again = datasets.load_image_folder(tmp_path, size=8, test_fraction=0.25, val_fraction=0.0)
    # the test split does not depend on val_fraction
    assert torch.equal(ds.splits["test"].x, again.splits["test"].x)
    assert_exact(ds, x, np.arange(20) % 2)


def test_image_folder_grayscale_and_resize(tmp_path):
    write_folder(tmp_path / "train", make_images(6, 3, 10, seed=6), ["a", "b", "c"])
    ds = datasets.load_image_folder(tmp_path, size=5, grayscale=True, test_fraction=0.0,
                                    val_fraction=0.0)
    assert ds.in_shape == (1, 5, 5) and len(ds.mean) == 1
    assert ds.splits["train"].x.min() >= 0 and ds.splits["train"].x.max() <= 1


def test_image_folder_errors(tmp_path):
    write_folder(tmp_path / "train", make_images(6, 3, 4, seed=7), ["a", "b"])
    write_folder(tmp_path / "test", make_images(2, 3, 4, seed=8), ["c"])
    with pytest.raises(DataError, match="not among the training classes") as err:
        datasets.load_image_folder(tmp_path, size=4)
    assert str(tmp_path / "test") in str(err.value)
    shutil.rmtree(tmp_path / "train")
    with pytest.raises(DataError, match="does not exist") as err:
        datasets.load_image_folder(tmp_path, size=4)
    assert str(tmp_path / "train") in str(err.value)


# ---- CSV ---------------------------------------------------------------------------------------

@pytest.fixture
def table(tmp_path) -> tuple[Path, pd.DataFrame]:
    rng = np.random.RandomState(9)
    n = 60
    df = pd.DataFrame({
        "id": np.arange(n, dtype=float),
        "height": rng.normal(170, 10, n).round(1),
        "colour": rng.choice(["red", "green", "blue"], n),
        "note": [f"n{i}" for i in range(n)],
        "level": rng.choice(["high", "low", "mid"], n),
        "weight": rng.normal(70, 5, n),
    })
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    return path, df


def test_csv_classification(table):
    path, df = table
    ds = DATASETS.create({"name": "csv", "path": str(path), "target": "level",
                          "task": "classification", "drop": ["note"]})
    assert ds.meta["features"] == ["id", "height", "colour=blue", "colour=green", "colour=red",
                                   "weight"]
    assert ds.in_shape == (6,) and ds.out_dim == 3 and ds.meta["classes"] == ["high", "low", "mid"]
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [42, 6, 12]
    st = ds.meta["standardized"]
    assert st["columns"] == [0, 1, 5]
    seen = []
    for key, split in ds.splits.items():
        raw = split.x[:, st["columns"]].double() * torch.tensor(st["std"]) + torch.tensor(st["mean"])
        rows = df.iloc[raw[:, 0].round().long().numpy()]
        seen += list(rows["id"])
        assert np.allclose(raw[:, 1:].numpy(), rows[["height", "weight"]].to_numpy(), atol=1e-4)
        onehot = (rows["colour"].to_numpy()[:, None] == np.array(["blue", "green", "red"]))
        assert np.array_equal(split.x[:, 2:5].numpy(), onehot.astype(np.float32))
        expected = rows["level"].map({"high": 0, "low": 1, "mid": 2}).to_numpy()
        assert np.array_equal(split.y.numpy(), expected)
        if key == "train":  # statistics come from the training rows only
            train_rows = rows[["id", "height", "weight"]]
            assert np.allclose(st["mean"], train_rows.mean().to_numpy())
            assert np.allclose(st["std"], train_rows.std(ddof=0).to_numpy())
    assert sorted(seen) == list(range(60))
    x = ds.splits["train"].x
    assert torch.allclose(x[:, [0, 1, 5]].mean(0), torch.zeros(3), atol=1e-5)
    assert not torch.allclose(ds.splits["test"].x[:, [0, 1, 5]].mean(0), torch.zeros(3), atol=1e-2)


def test_csv_features_regression_and_fixed_test_split(table):
    path, df = table
    ds = datasets.load_csv(path, target="weight", task="regression", features=["height", "id"],
                           val_fraction=0.0)
    assert ds.task == "regression" and ds.out_dim == 1 and ds.in_shape == (2,)
    y = ds.splits["train"].y
    assert y.shape == (48, 1) and y.dtype == torch.float32
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std(unbiased=False)) - 1) < 1e-5
    assert np.isclose(ds.meta["target_mean"][0], df["weight"].iloc[row_ids(ds, "train")].mean())
    other = datasets.load_csv(path, target="weight", task="regression", features=["height", "id"],
                              val_fraction=0.3)
    # the same test rows (standardized with other training statistics)
    assert np.array_equal(row_ids(ds, "test"), row_ids(other, "test"))


def row_ids(ds: Dataset, split: str) -> np.ndarray:
    """The 'id' column (feature 1 here) of a split, un-standardized."""
    st = ds.meta["standardized"]
    raw = ds.splits[split].x[:, 1].double() * st["std"][1] + st["mean"][1]
    return raw.round().long().numpy()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"target": "lvl", "task": "classification"}, "no column 'lvl'"),
        ({"target": "level", "task": "classification", "drop": ["nope"]}, "no column 'nope'"),
        ({"target": "level", "task": "regression"}, "is not numeric"),
        ({"target": "level", "task": "classification", "features": ["level"]}, "also listed"),
        ({"target": "level", "task": "classification", "test_fraction": 0.5,
          "val_fraction": 0.49}, "leave 1 of 60"),
    ],
)
def test_csv_errors(table, params, message):
    path = table[0]
    with pytest.raises(DataError, match=message) as err:
        datasets.load_csv(path, **params)
    assert str(path) in str(err.value)


def test_csv_missing_values(table):
    path, df = table
    df.loc[3, "height"] = np.nan
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="missing values in column 'height'"):
        datasets.load_csv(path, target="level", task="classification")


@pytest.mark.parametrize("column, text, target, task", [
    ("height", "inf", "level", "classification"),
    ("weight", "-inf", "level", "classification"),
    ("height", "1e999", "level", "classification"),  # overflows to inf when parsed
    ("weight", "inf", "weight", "regression"),  # the target too
])
def test_csv_infinite_values_are_refused(table, column, text, target, task):
    path, df = table
    df[column] = df[column].astype(object)
    df.loc[4, column] = text
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"infinite value -?inf in column '{column}' \(1 row\(s\), the first data row 5\)"):
        datasets.load_csv(path, target=target, task=task, drop=["note"])


def test_csv_infinite_values_in_a_dropped_column_are_ignored(table):
    path, df = table
    df["note"] = np.inf
    df.to_csv(path, index=False)
    ds = datasets.load_csv(path, target="level", task="classification", drop=["note"])
    assert all(torch.isfinite(s.x).all() for s in ds.splits.values())


# ---- bundled and generated data ----------------------------------------------------------------

@pytest.mark.parametrize("name, n, features, out_dim, task", [
    ("wine", 178, 13, 3, "classification"),
    ("breast_cancer", 569, 30, 2, "classification"),
    ("diabetes", 442, 10, 1, "regression"),
])
def test_bundled_datasets(name, n, features, out_dim, task):
    ds = DATASETS.create(name)
    assert set(ds.splits) == SPLITS and sum(map(len, ds.splits.values())) == n
    assert ds.in_shape == (features,) and ds.out_dim == out_dim and ds.task == task
    x = ds.splits["train"].x
    assert torch.allclose(x.mean(0), torch.zeros(features), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(features), atol=1e-4)
    assert_train_stats(ds)
    if task == "regression":
        assert abs(float(ds.splits["train"].y.mean())) < 1e-5 and ds.meta["target_std"][0] > 1


def test_synthetic_is_defined_by_its_seed():
    a = datasets.load_synthetic(n_samples=300, n_features=5, n_classes=3, seed=4)
    b = datasets.load_synthetic(n_samples=300, n_features=5, n_classes=3, seed=4)
    c = datasets.load_synthetic(n_samples=300, n_features=5, n_classes=3, seed=5)
    assert a.in_shape == (5,) and a.out_dim == 3
    assert torch.equal(a.splits["train"].x, b.splits["train"].x)
    assert not torch.equal(a.splits["train"].x, c.splits["train"].x)
    y = torch.cat([s.y for s in a.splits.values()])
    assert torch.bincount(y).tolist() == [100, 100, 100]


# ---- specs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist", "svhn",
                                  "image_folder"])
def test_spec_with_missing_path_fails_validation(tmp_path, name):
    with pytest.raises(SpecError, match="path does not exist") as err:
        DATASETS.validate({"name": name, "path": str(tmp_path / "nowhere")})
    assert err.value.field == "path" and str(tmp_path / "nowhere") in str(err.value)


def test_spec_rejects_bad_values(tmp_path):
    with pytest.raises(SpecError):
        DATASETS.validate({"name": "cifar10", "path": str(tmp_path), "val_size": -1})
    with pytest.raises(SpecError):
        DATASETS.validate({"name": "cifar100", "path": str(tmp_path), "label_mode": "medium"})
    with pytest.raises(SpecError):
        DATASETS.validate({"name": "wine", "test_fraction": 1.0})


@pytest.mark.parametrize("spec", [{"name": "digits"}, {"name": "digits", "channels": 3, "size": 12},
                                  {"name": "synthetic"}, {"name": "wine"}])
def test_every_loader_normalizes_with_the_population_sd_of_its_training_split(spec):
    """One rule for `normalize`'s default statistics: per channel (feature) mean and SD with ddof 0 (np.std)
    over the training split; digits used the sample SD (ddof 1) before protocol 3."""
    ds = DATASETS.create(spec)
    x = ds.splits["train"].x.double().numpy()
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    np.testing.assert_allclose(ds.std, x.std(axis=axes, ddof=0), rtol=1e-6)
    assert not np.allclose(ds.std, x.std(axis=axes, ddof=1), rtol=1e-7, atol=0)  # the test tells the two apart
    assert_train_stats(ds)


@pytest.mark.parametrize("params", [{}, {"channels": 3, "size": 12, "val_size": 0, "test_size": 100}])
def test_digits_splits_are_the_documented_gather_and_each_call_owns_its_tensors(params):
    """The split indices and statistics are computed once per process; the tensors are gathered anew each call,
    so a run that changes its data in place cannot change the next run's."""
    from sklearn.datasets import load_digits

    from ablab.data.base import SPLIT_SEED

    val, test, size, channels = (params.get("val_size", 180), params.get("test_size", 360), params.get("size", 8),
                                 params.get("channels", 1))
    bunch = load_digits()  # scikit-learn's own reader: the reference, independent of ours
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, channels, -1, -1)
    y = torch.tensor(bunch.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    expected = {"test": perm[:test], "val": perm[test:test + val], "train": perm[test + val:]}
    a = DATASETS.create({"name": "digits", **params})
    for name, idx in expected.items():
        idx = idx.sort().values
        assert torch.equal(a.splits[name].x, x[idx]) and torch.equal(a.splits[name].y, y[idx]), name
    train_x = x[expected["train"]]
    assert a.mean == (float(train_x.mean()),) * channels and a.std == (float(train_x.std(correction=0)),) * channels

    a.splits["train"].x.add_(1.0)  # a run changing its data in place
    a.splits["test"].y.zero_()
    b = DATASETS.create({"name": "digits", **params})
    idx = expected["train"].sort().values
    assert torch.equal(b.splits["train"].x, x[idx])
    assert torch.equal(b.splits["test"].y, y[expected["test"].sort().values])
