"""color_jitter: torchvision's ColorJitter on PIL images (DeepOBS' CIFAR pipeline), batched on the device."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ablab.data import augment
from ablab.data.augment import BRIGHTNESS, CONTRAST, SATURATION, jitter_colors
from ablab.data.base import Split
from ablab.data.datasets import create_image_dataset
from ablab.data.digits import digits
from ablab.errors import SpecError
from ablab.registry import AUGMENTATIONS

DEEPOBS = {"brightness": 63 / 255, "contrast": [0.2, 1.8], "saturation": [0.5, 1.5]}
PERMUTATIONS = list(itertools.permutations(range(3)))


def codes(n: int, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    """uint8 images: half noise, half smoothed noise (natural images have large flat regions)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    smooth = torch.nn.functional.avg_pool2d(x[: n // 2].float(), 3, 1, 1).round()
    x[: n // 2] = smooth.to(torch.uint8)
    return x


def dataset(channels: int = 3):
    x = codes(40, channels)
    y = torch.zeros(40, dtype=torch.int64)
    return create_image_dataset("toy", Split(x, y), Split(x[:4], y[:4]), 2, 4, {"source": "toy"})


def draws(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors in DeepOBS' ranges (and the edges 0, 1) and every order, each several times."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor([0.2, 0.2, 0.5]), torch.tensor([1.8, 1.8, 1.5])
    factors = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    factors[:3] = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    order = torch.tensor([PERMUTATIONS[i % 6] for i in range(n)])
    return factors, order


def per_image(img: torch.Tensor, factors: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The blends written out for one (C, H, W) image, one step at a time."""
    for op in order:
        f = float(factors[op])
        if img.shape[0] == 3:
            grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        else:
            grey = img[0]
        degenerate = {BRIGHTNESS: torch.zeros_like(grey), CONTRAST: grey.mean().expand_as(grey),
                      SATURATION: grey}[op]
        img = (degenerate + f * (img - degenerate)).clamp(0, 1)
    return img


@pytest.mark.parametrize("channels", [3, 1])
def test_blends_equal_a_per_image_computation(channels):
    x = codes(60, channels).float() / 255
    factors, order = draws(60)
    out = jitter_colors(x, factors, order)
    expected = torch.stack([per_image(x[i], factors[i], order[i].tolist()) for i in range(len(x))])
    # 0.299/0.587/0.114 here vs PIL's 16-bit fixed-point weights there: within 2e-5 · 3 steps
    assert torch.allclose(out, expected, atol=1e-4, rtol=0)
    assert float((out - x).abs().max()) > 0.3  # not the identity


def test_known_values():
    x = torch.tensor([[0.2, 1.0], [0.4, 0.5], [0.6, 0.0]]).view(1, 3, 1, 2)
    grey = torch.tensor([0.2 * 0.299 + 0.4 * 0.587 + 0.6 * 0.114, 1.0 * 0.299 + 0.5 * 0.587])

    def run(f: list[float], order: list[int]) -> torch.Tensor:
        return jitter_colors(x, torch.tensor([f]), torch.tensor([order]))[0]

    brighter = run([1.5, 1.0, 1.0], [0, 1, 2])  # 1.5·x, clipped at 1
    assert torch.allclose(brighter, torch.tensor([[0.3, 1.0], [0.6, 0.75], [0.9, 0.0]]).view(3, 1, 2))
    flat = run([1.0, 0.0, 1.0], [1, 0, 2])  # contrast 0: every pixel the image's mean grey
    assert torch.allclose(flat, grey.mean().expand(3, 1, 2), atol=1e-6)
    grey_image = run([1.0, 1.0, 0.0], [2, 1, 0])  # saturation 0: the grey image in every channel
    assert torch.allclose(grey_image, grey.view(1, 1, 2).expand(3, 1, 2), atol=1e-6)
    assert torch.equal(run([1.0, 1.0, 1.0], [2, 0, 1]), x[0])  # factor 1 is exactly the identity
    # the order matters: brighten then desaturate ≠ desaturate then brighten once clipping acts
    assert not torch.allclose(run([1.5, 1.0, 0.0], [0, 2, 1]), run([1.5, 1.0, 0.0], [2, 0, 1]))


def test_eight_bit_mode_is_bitwise_pil():
    """DeepOBS runs torchvision's ColorJitter on PIL images, i.e. PIL.ImageEnhance on uint8."""
    enhance = pytest.importorskip("PIL.ImageEnhance")
    image = pytest.importorskip("PIL.Image")
    x8 = codes(240, size=16, seed=1)
    factors, order = draws(240, seed=1)
    classes = {BRIGHTNESS: enhance.Brightness, CONTRAST: enhance.Contrast, SATURATION: enhance.Color}
    pil = []
    for i in range(len(x8)):
        img = image.fromarray(x8[i].permute(1, 2, 0).numpy(), "RGB")
        for op in order[i].tolist():
            img = classes[op](img).enhance(float(factors[i, op]))
        pil.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    expected = torch.stack(pil).to(torch.float32) / 255  # as ablab decodes uint8 codes
    x = x8.to(torch.float32) / 255
    assert torch.equal(jitter_colors(x, factors, order, eight_bit=True), expected)
    # the float mode: a few levels off, brighter on average (PIL truncates after every step)
    levels = (jitter_colors(x, factors, order) - expected) * 255
    assert float(levels.abs().max()) < 6 and 0.5 < float(levels.mean()) < 2.5


def test_draws_are_per_image_in_range_and_orders_uniform():
    ds = dataset()
    aug = AUGMENTATIONS.create({"name": "color_jitter", **DEEPOBS}, dataset=ds)
    n = 6000
    x = torch.full((n, 3, 2, 2), 0.5)
    x[:, 0] = 0.25  # coloured, so that saturation acts
    out, y = aug(x, torch.zeros(n), torch.Generator().manual_seed(4))
    # reproduce the documented draws: factors lo + (hi − lo)·U, then the argsort of three uniforms
    g = torch.Generator().manual_seed(4)
    lo, hi = torch.tensor([1 - 63 / 255, 0.2, 0.5]), torch.tensor([1 + 63 / 255, 1.8, 1.5])
    factors = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    order = torch.rand(n, 3, generator=g).argsort(dim=1)
    assert torch.equal(out, jitter_colors(x, factors, order))
    counts = [int((order == torch.tensor(p)).all(1).sum()) for p in PERMUTATIONS]
    assert all(850 < c < 1150 for c in counts), counts  # 1000 expected, sd ≈ 29
    assert len({tuple(v.tolist()) for v in out[:50].flatten(1)}) == 50  # every image its own draw
    same, _ = aug(x, torch.zeros(n), torch.Generator().manual_seed(4))
    assert torch.equal(out, same)


def test_strength_or_range_and_off_by_default():
    ds = dataset()
    x = ds.splits["train"].x
    y = ds.splits["train"].y
    off = AUGMENTATIONS.create("color_jitter", dataset=ds)
    assert torch.equal(off(x, y, torch.Generator().manual_seed(0))[0], x)
    spec = AUGMENTATIONS.validate({"name": "color_jitter", **DEEPOBS})
    assert spec["contrast"] == (0.2, 1.8) and spec["brightness"] == pytest.approx(63 / 255)
    as_range = {"name": "color_jitter", "brightness": [1 - 63 / 255, 1 + 63 / 255],
                "contrast": [0.2, 1.8], "saturation": 0.5}  # 0.5 ≡ [0.5, 1.5]
    a = AUGMENTATIONS.create({"name": "color_jitter", **DEEPOBS}, dataset=ds)
    b = AUGMENTATIONS.create(as_range, dataset=ds)
    assert torch.equal(a(x, y, torch.Generator().manual_seed(2))[0], b(x, y, torch.Generator().manual_seed(2))[0])


def test_bad_settings_are_clear_errors():
    ds = dataset()
    with pytest.raises(SpecError, match="minimum above its maximum"):
        AUGMENTATIONS.create({"name": "color_jitter", "contrast": [1.8, 0.2]}, dataset=ds)
    with pytest.raises(SpecError):
        AUGMENTATIONS.create({"name": "color_jitter", "brightness": -0.1}, dataset=ds)
    with pytest.raises(SpecError, match="3 or 1 channels"):
        augment.color_jitter(dataset(channels=2))
    with pytest.raises(SpecError, match="eight_bit needs 8-bit images"):
        augment.color_jitter(digits(size=8, channels=3), eight_bit=True)
    assert augment.color_jitter(digits(size=8, channels=3), brightness=0.2) is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_color_jitter_on_cuda_equals_cpu():
    x = codes(96, size=16).to(torch.float32) / 255
    factors, order = draws(96)
    for eight_bit in (True, False):
        cpu = jitter_colors(x, factors, order, eight_bit)
        cuda = jitter_colors(x.cuda(), factors.cuda(), order.cuda(), eight_bit).cpu()
        if eight_bit:
            assert torch.equal(cuda, cpu)
        else:
            assert torch.allclose(cuda, cpu, atol=1e-6, rtol=0)
    ds = dataset().to("cuda")
    aug = AUGMENTATIONS.create({"name": "color_jitter", **DEEPOBS, "eight_bit": True}, dataset=ds)
    xs, ys = ds.splits["train"].x, ds.splits["train"].y
    a = aug(xs, ys, torch.Generator("cuda").manual_seed(3))[0]  # first call: ranges copied to the device
    assert a.device.type == "cuda" and torch.equal(a, aug(xs, ys, torch.Generator("cuda").manual_seed(3))[0])
    torch.cuda.set_sync_debug_mode("error")  # later batches never wait for the host
    try:
        aug(xs, ys, torch.Generator("cuda").manual_seed(4))
    finally:
        torch.cuda.set_sync_debug_mode("default")
