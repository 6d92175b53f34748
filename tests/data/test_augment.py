"""Batched augmentations: exact flips, crops that are windows of the padded image, seeded draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ablab.data import augment
from ablab.data.augment import compose, create_augmentation
from ablab.data.base import Split
from ablab.data.datasets import create_image_dataset, load_wine
from ablab.errors import SpecError
from ablab.registry import AUGMENTATIONS


def image_dataset(n: int = 64, channels: int = 3, size: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    x[:, 1] //= 3  # channels with different statistics
    y = torch.randint(0, 4, (n,), generator=g)
    return create_image_dataset("toy", Split(x, y), Split(x[:8], y[:8]), 4, 8, {"source": "toy"})


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def ds():
    return image_dataset()


def test_hflip_is_an_exact_mirror(ds):
    x, y = ds.splits["train"].x, ds.splits["train"].y
    always = AUGMENTATIONS.create({"name": "hflip", "p": 1.0}, dataset=ds)
    out, out_y = always(x, y, gen(0))
    assert torch.equal(out, x.flip(-1)) and out_y is y
    assert torch.equal(always(out, y, gen(1))[0], x)  # flipping twice is the identity
    never = AUGMENTATIONS.create({"name": "hflip", "p": 0.0}, dataset=ds)
    assert torch.equal(never(x, y, gen(0))[0], x)


def test_hflip_flips_some_samples_exactly(ds):
    x, y = ds.splits["train"].x, ds.splits["train"].y
    out, _ = augment.hflip(ds)(x, y, gen(3))
    flipped = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert bool((flipped | kept).all()) and 0 < int(flipped.sum()) < len(x)


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_random_crop_outputs_windows_of_the_padded_image(mode):
    small = image_dataset(n=12, channels=2, size=5)
    x, y = small.splits["train"].x, small.splits["train"].y
    p = 2
    out, out_y = augment.random_crop(small, padding=p, mode=mode)(x, y, gen(1))
    assert out.shape == x.shape and out_y is y
    padded = F.pad(x, (p, p, p, p), mode="constant" if mode == "zero" else "reflect")
    offsets = set()
    for b in range(len(x)):  # brute force: which window of the padded image is the output?
        hits = [(i, j) for i in range(2 * p + 1) for j in range(2 * p + 1)
                if torch.equal(out[b], padded[b, :, i:i + 5, j:j + 5])]
        assert hits, f"sample {b} is no window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3  # offsets are drawn per sample …
    assert any(i != j for i, j in offsets)  # … and per direction


def test_random_crop_zero_padding_is_identity_and_bad_padding_fails(ds):
    x, y = ds.splits["train"].x, ds.splits["train"].y
    assert torch.equal(augment.random_crop(ds, padding=0)(x, y, gen(0))[0], x)
    with pytest.raises(SpecError, match="reflect padding must be smaller"):
        augment.random_crop(ds, padding=8, mode="reflect")
    with pytest.raises(SpecError):
        AUGMENTATIONS.create({"name": "random_crop", "padding": -1}, dataset=ds)


def test_same_seed_same_batch_different_seed_different(ds):
    aug = create_augmentation(["random_crop", {"name": "hflip"}], ds)
    x, y = ds.splits["train"].x, ds.splits["train"].y
    a, b, c = (aug(x, y, gen(s))[0] for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_draws_come_from_the_generator_only(ds):
    x, y = ds.splits["train"].x, ds.splits["train"].y
    aug = augment.random_crop(ds)
    torch.manual_seed(0)
    a = aug(x, y, gen(5))[0]
    torch.manual_seed(1)
    assert torch.equal(a, aug(x, y, gen(5))[0])


def test_compose_applies_in_order(ds):
    """Zero-padded crops and normalize do not commute: normalize after the crop moves the padding
    to −mean/std, before it the padding stays 0; so each order has its own known result."""
    x, y = ds.splits["train"].x, ds.splits["train"].y
    crop = augment.random_crop(ds, padding=2)
    norm = augment.normalize(ds)
    crop_then_norm = norm(crop(x, y, gen(0))[0], y, gen(1))[0]
    norm_then_crop = crop(norm(x, y, gen(1))[0], y, gen(0))[0]
    assert not torch.allclose(crop_then_norm, norm_then_crop)
    assert torch.equal(compose([crop, norm])(x, y, gen(0))[0], crop_then_norm)
    assert torch.equal(compose([norm, crop])(x, y, gen(0))[0], norm_then_crop)
    assert torch.equal(compose([])(x, y, gen(0))[0], x)


def test_normalize_standardizes_the_training_split(ds):
    x, y = ds.splits["train"].x, ds.splits["train"].y
    out, _ = AUGMENTATIONS.create("normalize", dataset=ds)(x, y, gen(0))
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    given = augment.normalize(ds, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])(x, y, gen(0))[0]
    assert torch.allclose(given, (x - 0.5) / 0.25)


def test_normalize_vectors_and_bad_statistics():
    wine = load_wine()
    x, y = wine.splits["train"].x, wine.splits["train"].y
    out = augment.normalize(wine)(x, y, gen(0))[0]
    assert torch.allclose(out.mean(0), torch.zeros(13), atol=1e-5)
    with pytest.raises(SpecError, match="needs 13 values"):
        augment.normalize(wine, mean=[0.0], std=[1.0])
    with pytest.raises(SpecError, match="positive"):
        augment.normalize(wine, std=[0.0] * 13)


DEEPOBS_CIFAR10 = {"mean": [0.49139968, 0.48215841, 0.44653091], "std": [0.24703223, 0.24348513, 0.26158784]}


def test_normalize_with_fixed_constants_ignores_the_split_statistics(ds):
    x, y = ds.splits["train"].x, ds.splits["train"].y
    fixed = AUGMENTATIONS.create({"name": "normalize", **DEEPOBS_CIFAR10}, dataset=ds)
    out = fixed(x, y, None)[0]
    for c in range(3):  # channel by channel, against the constants written out
        expected = (x[:, c] - DEEPOBS_CIFAR10["mean"][c]) / DEEPOBS_CIFAR10["std"][c]
        assert torch.allclose(out[:, c], expected, atol=1e-6)
    assert fixed.at_eval  # evaluation sees the same constants
    computed = AUGMENTATIONS.create("normalize", dataset=ds)(x, y, None)[0]
    assert not torch.allclose(out, computed, atol=1e-2)


def test_normalize_constants_of_the_wrong_length_fail_validation(tmp_path, capsys):
    from ablab.cli import main

    spec = tmp_path / "bad.yaml"
    spec.write_text("""name: bad
base:
  data: {name: digits, size: 8, channels: 3}
  model: mlp
  optimizer: {name: sgd, lr: 0.1}
  epochs: 1
  batch_size: 32
  augment:
    - {name: color_jitter, brightness: 0.2}
    - {name: normalize, mean: [0.5, 0.5], std: [0.25, 0.25, 0.25]}
""")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {spec}: base.augment.1.mean: mean needs 3 values (one per channel of (3, 8, 8)), got 2"


@pytest.mark.parametrize("name", ["random_crop", "hflip"])
def test_image_augmentations_refuse_vectors(name):
    with pytest.raises(SpecError, match="needs images"):
        AUGMENTATIONS.create(name, dataset=load_wine())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentations_on_cuda(ds):
    cuda = ds.to("cuda")
    x, y = cuda.splits["train"].x, cuda.splits["train"].y
    aug = create_augmentation(["random_crop", "hflip", "normalize"], cuda)
    a = aug(x, y, torch.Generator("cuda").manual_seed(3))[0]
    b = aug(x, y, torch.Generator("cuda").manual_seed(3))[0]
    assert a.device.type == "cuda" and torch.equal(a, b)
    flip = augment.hflip(cuda, p=1.0)
    assert torch.equal(flip(x, y, torch.Generator("cuda"))[0], x.flip(-1))
