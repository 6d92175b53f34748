"""8-bit image datasets kept as uint8 codes on the device (the GPU fast path), decoded per batch."""

from pathlib import Path

import numpy as np
import pytest
import torch

import ablab.train.build as build
import ablab.train.loop as loop
from ablab.data.base import Dataset, Split, encode_pixels
from ablab.data.corrupt import corrupt_dataset
from ablab.registry import DATASETS
from ablab.spec import RunSpec
from fileformats import make_images, write_cifar_batch


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    x = make_images(72, 3, 32, seed=3)
    y = np.arange(72) % 10
    for k in range(1, 6):
        sl = slice((k - 1) * 12, k * 12)
        write_cifar_batch(root / f"data_batch_{k}", x[sl], {"labels": y[sl]})
    write_cifar_batch(root / "test_batch", x[60:], {"labels": y[60:]})
    return root


def test_every_code_survives_the_round_trip():
    codes = torch.arange(256, dtype=torch.uint8)
    floats = codes.to(torch.float32).div_(255)  # the loaders' own operation
    assert torch.equal(encode_pixels(floats), codes)
    back, _ = Split(encode_pixels(floats)[:, None], torch.zeros(256)).rows(slice(None))
    assert torch.equal(back[:, 0], floats)  # bitwise, not approximately


def test_compact_images_are_uint8_and_read_back_bitwise(cifar_root):
    data = DATASETS.create({"name": "cifar10", "path": str(cifar_root), "val_size": 10})
    assert data.pixels8
    compact = data.to("cpu", compact=True)
    for key, split in data.splits.items():
        assert compact.splits[key].x.dtype == torch.uint8
        idx = torch.tensor([5, 0, 3, 3])[: len(split)] % len(split)
        for index in (idx, slice(1, 7)):
            x, y = compact.splits[key].rows(index)
            assert x.dtype == torch.float32 and torch.equal(x, split.x[index]) and torch.equal(y, split.y[index])
    # float data stays float: tabular features are not k/255, and compact=False changes nothing
    assert not DATASETS.create({"name": "wine"}).pixels8
    assert DATASETS.create({"name": "wine"}).to("cpu", compact=True).splits["train"].x.dtype == torch.float32
    assert data.to("cpu").splits["train"].x.dtype == torch.float32


def test_corruption_keeps_the_8_bit_property(cifar_root):
    data = DATASETS.create({"name": "cifar10", "path": str(cifar_root), "val_size": 10})
    shuffled = corrupt_dataset(data, 0.5, True, seed=1)
    assert shuffled.pixels8 and shuffled.mean == data.mean
    assert torch.equal(shuffled.to("cpu", compact=True).splits["test"].rows(slice(None))[0], shuffled.splits["test"].x)


def test_training_on_uint8_codes_gives_the_same_numbers(cifar_root, monkeypatch):
    spec = RunSpec.model_validate({
        "data": {"name": "cifar10", "path": str(cifar_root), "val_size": 10},
        "model": {"name": "one_hidden_conv"}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "augment": [{"name": "random_crop", "padding": 4}, "hflip", "normalize"],
        "epochs": 2, "batch_size": 16, "device": "cpu",
        "record": {"every_steps": 1, "evaluators": ["standard", {"name": "sharpness", "batches": 2, "hessian_iters": 2}]},
    })
    seen: list[torch.dtype] = []
    real_to = Dataset.to

    def spy(self, device, compact=False):
        moved = real_to(self, device, compact)
        seen.append(moved.splits["train"].x.dtype)
        return moved

    monkeypatch.setattr(Dataset, "to", spy)
    plain = loop.train(spec)
    monkeypatch.setattr(build, "compact_on", lambda device: True)
    compact = loop.train(spec)
    assert seen == [torch.float32, torch.uint8]
    assert plain.status == compact.status == "done", (plain.error, compact.error)
    assert len(plain.metrics) > 10 and plain.metrics == compact.metrics
