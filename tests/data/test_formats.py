"""Readers of official file formats: exact round trips, and one DataError naming the file otherwise.

The ``write_*`` helpers in tests/fileformats.py build files in each official format.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pydantic
import pytest
import scipy.io
from PIL import Image

from ablab.data import formats
from ablab.data.formats import (
    ExistingPath,
    read_cifar_batch,
    read_csv,
    read_idx,
    read_image_folder,
    read_svhn_mat,
)
from ablab.errors import DataError


from fileformats import make_images, truncate, write_cifar_batch, write_idx, write_png, write_svhn_mat


# ---- CIFAR pickles -----------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batch_round_trip(tmp_path, protocol):
    x, y = make_images(7, 3, 32, seed=0), np.arange(7) % 10
    write_cifar_batch(tmp_path / "b", x, {"labels": y}, protocol)
    rx, ry = read_cifar_batch(tmp_path / "b", "labels", 10)
    assert rx.dtype == np.uint8 and rx.shape == (7, 3, 32, 32)
    assert np.array_equal(rx, x) and np.array_equal(ry, y) and ry.dtype == np.int64


def test_cifar_batch_written_by_numpy_1(tmp_path):
    # the official files name numpy.core.multiarray (numpy 2 moved it to numpy._core)
    x = make_images(3, 3, 32, seed=0)
    write_cifar_batch(tmp_path / "b", x, {"labels": [1, 2, 3]}, protocol=2)
    raw = (tmp_path / "b").read_bytes()
    assert b"numpy._core.multiarray" in raw
    (tmp_path / "b").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    rx, ry = read_cifar_batch(tmp_path / "b", "labels", 10)
    assert np.array_equal(rx, x) and list(ry) == [1, 2, 3]


def test_cifar_batch_channel_layout(tmp_path):
    # a CIFAR row is 1024 red, then 1024 green, then 1024 blue bytes, each row-major
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256])
    write_cifar_batch(tmp_path / "b", row.astype(np.uint8)[None], {"labels": [3]})
    x, _ = read_cifar_batch(tmp_path / "b", "labels", 10)
    assert (x[0, 0] == 10).all() and (x[0, 1] == 20).all()
    assert x[0, 2, 1, 0] == 32 and x[0, 2, 0, 5] == 5


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_batch_refuses_code_in_pickle(tmp_path):
    (tmp_path / "b").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match="refusing to load global posix.getcwd|refusing"):
        read_cifar_batch(tmp_path / "b", "labels", 10)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: truncate(p), "not a readable CIFAR python batch"),
        (lambda p: p.write_bytes(b"not a pickle at all"), "not a readable CIFAR python batch"),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "holds a list"),
        (lambda p: p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})),
         "no key"),
        (lambda p: write_cifar_batch(p, np.zeros((2, 3, 16, 16), np.uint8), {"labels": [0, 1]}),
         "expected N×3072 uint8"),
        (lambda p: write_cifar_batch(p, make_images(2, 3, 32, 0), {"labels": [0]}),
         "2 images but 1 labels"),
        (lambda p: write_cifar_batch(p, make_images(2, 3, 32, 0), {"labels": [0, 10]}),
         r"labels in \[0, 10\], expected 0..9"),
    ],
)
def test_cifar_batch_damage_is_one_data_error(tmp_path, damage, message):
    path = tmp_path / "data_batch_1"
    write_cifar_batch(path, make_images(4, 3, 32, 0), {"labels": [0, 1, 2, 3]})
    damage(path)
    with pytest.raises(DataError, match=message) as err:
        read_cifar_batch(path, "labels", 10)
    assert str(path) in str(err.value)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="is missing") as err:
        read_cifar_batch(tmp_path / "nothing", "labels", 10)
    assert str(tmp_path / "nothing") in str(err.value)


# ---- idx ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    x = make_images(5, 1, 28, seed=1)[:, 0]
    write_idx(tmp_path / name, x)
    out = read_idx(tmp_path / name, np.uint8, 3)
    assert out.shape == (5, 28, 28) and np.array_equal(out, x)


def test_idx_other_types(tmp_path):
    a = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    write_idx(tmp_path / "i", a)
    assert np.array_equal(read_idx(tmp_path / "i"), a) and read_idx(tmp_path / "i").dtype == np.int32
    f = np.linspace(0, 1, 5).astype(">f4")
    write_idx(tmp_path / "f", f)
    assert np.array_equal(read_idx(tmp_path / "f"), f)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc", "bad idx magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc", "bad idx magic"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 3) + b"abc", r"expected 0x00000801"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "payload of 3 bytes, expected 5"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abc", "payload of 3 bytes, expected 2"),
        (b"\x00\x00\x08\x01\x00\x00", "truncated idx header"),
        (b"\x00\x00", "too short"),
    ],
)
def test_idx_bad_headers(tmp_path, raw, message):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as err:
        read_idx(path, np.uint8, 1)
    assert str(path) in str(err.value)


def test_idx_truncated_gzip(tmp_path):
    path = tmp_path / "a-idx3-ubyte.gz"
    write_idx(path, make_images(20, 1, 28, seed=1)[:, 0])
    truncate(path, 0.6)
    with pytest.raises(DataError, match="cannot read") as err:
        read_idx(path, np.uint8, 3)
    assert str(path) in str(err.value)


# ---- .mat (SVHN) -------------------------------------------------------------------------------

def test_svhn_mat_round_trip(tmp_path):
    x, digits = make_images(6, 3, 32, seed=2), np.array([0, 1, 9, 0, 5, 3])
    write_svhn_mat(tmp_path / "train_32x32.mat", x, digits)
    rx, ry = read_svhn_mat(tmp_path / "train_32x32.mat")
    assert rx.shape == (6, 3, 32, 32) and np.array_equal(rx, x)
    assert np.array_equal(ry, digits) and ry.dtype == np.int64


@pytest.mark.parametrize(
    "content, message",
    [
        ({"X": np.zeros((32, 32, 3, 2), np.uint8)}, "no variable y"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]], np.uint8)},
         r"labels in \[1, 11\], expected 1..10"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [1]], np.uint8)},
         r"labels in \[0, 1\]"),
        ({"X": np.zeros((28, 28, 2), np.uint8), "y": np.ones((2, 1), np.uint8)},
         "expected 32×32×3×N uint8"),
        ({"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1), np.uint8)},
         "2 images in X but 3 labels"),
    ],
)
def test_svhn_mat_bad_content(tmp_path, content, message):
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(path, content)
    with pytest.raises(DataError, match=message) as err:
        read_svhn_mat(path)
    assert str(path) in str(err.value)


def test_svhn_mat_corrupt(tmp_path):
    path = tmp_path / "test_32x32.mat"
    write_svhn_mat(path, make_images(4, 3, 32, seed=2), np.arange(4))
    truncate(path)
    with pytest.raises(DataError, match="not a readable .mat file") as err:
        read_svhn_mat(path)
    assert str(path) in str(err.value)


# ---- image folders -----------------------------------------------------------------------------

def test_image_folder_round_trip(tmp_path):
    x = make_images(6, 3, 8, seed=3)
    labels = ["cat", "ant", "bee", "cat", "ant", "ant"]
    for i, (img, name) in enumerate(zip(x, labels)):
        write_png(tmp_path / name / f"{i}.png", img)
    (tmp_path / "bee" / "notes.txt").write_text("ignored")
    rx, ry, classes = read_image_folder(tmp_path, size=8, grayscale=False)
    assert classes == ["ant", "bee", "cat"] and rx.shape == (6, 3, 8, 8)
    for img, label in zip(rx, ry):  # each image back exactly, under its own class
        i = int(img[0, 0, 0])
        assert np.array_equal(img, x[i]) and classes[label] == labels[i]


def test_image_folder_grayscale_resize_and_jpeg(tmp_path):
    img = make_images(1, 3, 10, seed=4)[0]
    write_png(tmp_path / "a" / "0.png", img)
    Image.fromarray(img.transpose(1, 2, 0)).save(tmp_path / "a" / "1.JPG", format="JPEG")
    x, y, _ = read_image_folder(tmp_path, size=6, grayscale=True)
    assert x.shape == (2, 1, 6, 6) and x.dtype == np.uint8 and list(y) == [0, 0]


@pytest.mark.parametrize("case", ["corrupt", "empty_class", "no_classes", "unknown_class"])
def test_image_folder_errors(tmp_path, case):
    write_png(tmp_path / "a" / "0.png", make_images(1, 3, 4, seed=5)[0])
    classes = None
    if case == "corrupt":
        bad = tmp_path / "a" / "1.png"
        bad.write_bytes(b"\x89PNG not really")
        where, message = bad, "not a readable image"
    elif case == "empty_class":
        (tmp_path / "b").mkdir()
        where, message = tmp_path / "b", "no .png/.jpg/.jpeg images"
    elif case == "no_classes":
        tmp_path = tmp_path / "a"
        where, message = tmp_path, "no class folders"
    else:
        classes = ["b"]
        where, message = tmp_path, r"class folders \['a'\] are not among"
    with pytest.raises(DataError, match=message) as err:
        read_image_folder(tmp_path, size=4, grayscale=False, classes=classes)
    assert str(where) in str(err.value)


# ---- CSV, caching, spec paths ------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"a,b\n", b'a,b\n1,"2\n'])
def test_csv_unreadable(tmp_path, content):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_csv(path)
    assert str(path) in str(err.value)


def test_cache_hits_same_file_and_misses_changed_file(tmp_path):
    path = tmp_path / "a-idx1-ubyte"
    write_idx(path, np.arange(5, dtype=np.uint8))
    first = read_idx(path)
    assert read_idx(path) is first and not first.flags.writeable
    write_idx(path, np.arange(6, dtype=np.uint8))
    os.utime(path, ns=(10**9, 10**9))
    assert np.array_equal(read_idx(path), np.arange(6))


def test_existing_path_validator(tmp_path):
    adapter = pydantic.TypeAdapter(ExistingPath)
    assert adapter.validate_python(str(tmp_path)) == tmp_path
    with pytest.raises(pydantic.ValidationError, match="path does not exist"):
        adapter.validate_python(str(tmp_path / "missing"))


def test_stamp_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        formats.stamp([tmp_path / "gone"])
