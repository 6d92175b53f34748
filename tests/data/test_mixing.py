"""Mixed-example augmentation (seed 002 ch. 2): exact mixtures, realised-mixture labels, per-pair draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablab.data import mixing
from ablab.data.base import Split
from ablab.data.datasets import create_image_dataset, load_wine
from ablab.errors import SpecError
from ablab.registry import AUGMENTATIONS

METHODS = ["mixup", "bc_plus", "vertical_concat", "horizontal_concat", "mixed_concat", "random_2x2", "vh_mixup",
           "vh_bc_plus", "random_square", "random_column_interval", "random_row_interval", "random_rows",
           "random_columns", "random_pixels", "random_elements", "noisy_mixup"]
AREA = ["vertical_concat", "horizontal_concat", "mixed_concat", "random_2x2", "random_square",
        "random_column_interval", "random_row_interval", "random_rows", "random_columns", "random_pixels",
        "random_elements"]
WITH_ALPHA = ["mixup", "bc_plus", "vertical_concat", "horizontal_concat", "mixed_concat", "vh_mixup", "vh_bc_plus",
              "random_rows", "random_columns", "random_pixels", "random_elements", "noisy_mixup"]
SHAPE = (3, 12, 10)  # not square: a row/column mix-up shows


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def image_dataset(shape=SHAPE, n: int = 72, classes: int = 5):  # 64 train, 8 val
    g = gen(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    return create_image_dataset("toy", Split(x, y), Split(x[:8], y[:8]), classes, 8, {"source": "toy"})


@pytest.fixture(scope="module")
def ds():
    return image_dataset()


def batch(ds, n: int = 64, device: str = "cpu"):
    x, y = ds.splits["train"].rows(slice(0, n))
    return x.to(device), y.to(device)


def ones_zeros(b: int = 64, shape=SHAPE, device: str = "cpu"):
    return torch.ones(b, *shape, device=device), torch.zeros(b, *shape, device=device)


def test_the_sixteen_methods_are_registered():
    assert set(METHODS) <= set(AUGMENTATIONS.list_names())
    assert len(set(METHODS)) == 16


# ---- C2-1: with x₁ = 1 and x₂ = 0 the image mean is the label weight of x₁


@pytest.mark.parametrize("name", AREA)
def test_area_methods_mean_of_ones_over_zeros_is_the_label_weight_exactly(ds, name):
    x1, x2 = ones_zeros()
    mixed, w = AUGMENTATIONS.create(name, dataset=ds).mix_pairs(x1, x2, gen(3))
    assert bool(((mixed == 0) | (mixed == 1)).all())  # no averaging: every element is from x₁ or x₂
    assert torch.equal(mixed.mean((1, 2, 3)), w)
    assert 0 < float(w.mean()) < 1


def test_mixup_of_ones_and_zeros_is_lambda_everywhere(ds):
    x1, x2 = ones_zeros()
    mixed, w = AUGMENTATIONS.create("mixup", dataset=ds).mix_pairs(x1, x2, gen(3))
    assert torch.equal(mixed, w.view(-1, 1, 1, 1).expand_as(mixed))


@pytest.mark.parametrize("name", ["vh_mixup", "noisy_mixup"])
def test_averaging_methods_mean_of_ones_over_zeros_is_near_the_label_weight(ds, name):
    x1, x2 = ones_zeros(b=512, shape=(3, 32, 32))
    mixed, w = AUGMENTATIONS.create(name, dataset=ds).mix_pairs(x1, x2, gen(4))
    gap = mixed.mean((1, 2, 3)) - w
    if name == "vh_mixup":  # area-weighted sum of Eq. 2.7 equals the label up to rounding
        assert float(gap.abs().max()) < 1e-6
    else:  # clipping biases λ_rc near 0 and 1 only; over 512 pairs the noise averages out
        assert float(gap.abs().mean()) < 0.02 and float(gap.abs().max()) < 0.1


def test_noisy_mixup_clips_the_per_pixel_coefficient_and_shares_it_across_channels(ds):
    x1, x2 = ones_zeros(b=256)
    mixed, w = AUGMENTATIONS.create({"name": "noisy_mixup", "sigma": 0.5}, dataset=ds).mix_pairs(x1, x2, gen(1))
    assert float(mixed.min()) == 0.0 and float(mixed.max()) == 1.0  # σ = 0.5 clips often
    assert torch.equal(mixed[:, :1].expand_as(mixed), mixed)
    sd = math.sqrt(0.025)
    assert AUGMENTATIONS.validate("noisy_mixup")["sigma"] == pytest.approx(sd)


# ---- C2-2: VH-mixup quadrants and label


def test_vh_mixup_quadrants_and_label():
    h, w = 8, 10
    x1, x2 = ones_zeros(b=2, shape=(3, h, w))
    rows, cols = torch.tensor([3, 6]), torch.tensor([5, 2])
    lam3 = torch.tensor([0.3, 0.8])
    out = mixing.vh_images(x1, x2, rows, cols, lam3)
    for i in range(2):
        r, c, l3 = int(rows[i]), int(cols[i]), lam3[i]
        assert bool((out[i, :, :r, :c] == 1).all())  # top-left: x₁
        assert bool((out[i, :, r:, c:] == 0).all())  # bottom-right: x₂
        assert bool((out[i, :, :r, c:] == l3).all())  # top-right: λ₃x₁ + (1 − λ₃)x₂
        assert bool((out[i, :, r:, :c] == 1 - l3).all())  # bottom-left: (1 − λ₃)x₁ + λ₃x₂
    weight = mixing.vh_weight(rows, cols, lam3, h, w)
    expected = [0.3 * 3 / 8 + 0.7 * 5 / 10, 0.8 * 6 / 8 + 0.2 * 2 / 10]
    assert weight.tolist() == pytest.approx(expected, abs=1e-7)
    torch.testing.assert_close(out.mean((1, 2, 3)), weight)


# ---- C2-3: BC+


def bc_plus_numpy(x1: np.ndarray, x2: np.ndarray, lam: float, eps: float) -> np.ndarray:
    """Eq. 2.4 as written, in float64, for one pair."""
    s1, s2 = x1.std() + eps, x2.std() + eps
    p = 1.0 / (1.0 + (s1 / s2) * (1.0 - lam) / lam)
    return (p * (x1 - x1.mean()) + (1 - p) * (x2 - x2.mean())) / np.sqrt(p**2 + (1 - p) ** 2)


def test_bc_plus_with_equal_stds_uses_p_equal_lambda_and_the_root_denominator():
    x1 = torch.randn(4, 3, 8, 8, generator=gen(0)) * 2 + 5
    x2 = -x1 + 1  # the same std, another mean
    lam = torch.tensor([0.5, 0.2, 0.9, 0.37])
    out = mixing.bc_plus_images(x1, x2, lam, std_eps=1e-3)
    z1 = x1 - x1.mean((1, 2, 3), keepdim=True)
    z2 = x2 - x2.mean((1, 2, 3), keepdim=True)
    lv = lam.view(-1, 1, 1, 1)
    expected = (lv * z1 + (1 - lv) * z2) / torch.sqrt(lv**2 + (1 - lv) ** 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # λ = ½: (z₁ + z₂)/√2, i.e. the √ denominator, not p² + (1 − p)²
    torch.testing.assert_close(out[0], (z1[0] + z2[0]) / math.sqrt(2), rtol=1e-5, atol=1e-5)


def test_bc_plus_matches_eq_2_4_and_labels_with_lambda_not_p(ds):
    g = gen(2)
    x1 = torch.rand(32, *SHAPE, generator=g)
    x2 = torch.rand(32, *SHAPE, generator=g) * 0.2  # a fifth of x₁'s std: p differs from λ
    out, w = AUGMENTATIONS.create("bc_plus", dataset=ds).mix_pairs(x1, x2, gen(5))
    for i in range(32):
        want = bc_plus_numpy(x1[i].double().numpy(), x2[i].double().numpy(), float(w[i]), 1e-3)
        np.testing.assert_allclose(out[i].numpy(), want, rtol=1e-4, atol=1e-5)


def test_bc_plus_is_finite_at_lambda_0_and_1_and_for_constant_images():
    x1, x2 = torch.rand(2, 3, 4, 4, generator=gen(0)), torch.full((2, 3, 4, 4), 0.5)
    out = mixing.bc_plus_images(x1, x2, torch.tensor([0.0, 1.0]), std_eps=1e-3)
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out[0], torch.zeros(3, 4, 4))  # λ = 0: x₂ − μ₂, here 0
    torch.testing.assert_close(out[1], x1[1] - x1[1].mean())  # λ = 1: x₁ − μ₁


def test_vh_bc_plus_zero_means_the_originals_before_concatenating():
    x1 = torch.rand(3, 3, 8, 8, generator=gen(0)) + 3
    x2 = torch.rand(3, 3, 8, 8, generator=gen(1)) - 2
    rows, cols, lam3 = torch.tensor([2, 5, 8]), torch.tensor([7, 1, 0]), torch.tensor([0.4, 0.6, 1.0])
    out = mixing.vh_bc_plus_images(x1, x2, rows, cols, lam3, std_eps=1e-3)
    z1, z2 = x1 - x1.mean((1, 2, 3), keepdim=True), x2 - x2.mean((1, 2, 3), keepdim=True)
    for i in range(3):
        v = torch.cat([z1[i, :, : rows[i]], z2[i, :, rows[i]:]], dim=1).double().numpy()
        hz = torch.cat([z1[i, :, :, : cols[i]], z2[i, :, :, cols[i]:]], dim=2).double().numpy()
        s1, s2, lam = v.std() + 1e-3, hz.std() + 1e-3, float(lam3[i])
        p = 1.0 / (1.0 + (s1 / s2) * (1 - lam) / lam)
        want = (p * v + (1 - p) * hz) / np.sqrt(p**2 + (1 - p) ** 2)  # the concats are not centred again
        np.testing.assert_allclose(out[i].numpy(), want, rtol=1e-4, atol=1e-5)


# ---- C2-4: labels


@pytest.mark.parametrize("name", METHODS)
def test_labels_are_non_negative_sum_to_one_and_name_the_pair(ds, name):
    x, y = batch(ds)
    mixed, soft = AUGMENTATIONS.create(name, dataset=ds)(x, y, gen(6))
    assert soft.shape == (64, ds.num_classes) and soft.dtype == torch.float32
    assert bool((soft >= 0).all())
    torch.testing.assert_close(soft.sum(1), torch.ones(64), rtol=0, atol=1e-6)
    assert int((soft > 0).sum(1).max()) <= 2  # only the pair's two classes


def test_the_label_weight_goes_to_the_first_image(ds):
    """Constant images: image k is k/64, so a mixture's mean is the label-weighted mean of its sources."""
    values = torch.arange(64, dtype=torch.float32) / 64
    x = values.view(-1, 1, 1, 1).expand(64, *SHAPE).contiguous()
    y = torch.arange(64)
    wide = image_dataset(classes=64)
    for name in AREA + ["mixup", "vh_mixup"]:
        mixed, soft = AUGMENTATIONS.create(name, dataset=wide)(x, y, gen(8))
        torch.testing.assert_close(mixed.mean((1, 2, 3)), soft @ values, rtol=0, atol=1e-5)


def test_lambda_one_returns_the_first_example():
    x1, x2 = torch.rand(4, *SHAPE, generator=gen(0)), torch.rand(4, *SHAPE, generator=gen(1))
    y1, y2 = F.one_hot(torch.tensor([0, 1, 2, 3]), 5).float(), F.one_hot(torch.tensor([4, 4, 0, 1]), 5).float()
    one = torch.ones(4)
    _, h, w = SHAPE
    assert torch.equal(mixing.mixup_images(x1, x2, one), x1)
    assert torch.equal(mixing.mix_labels(y1, y2, one), y1)
    assert torch.equal(mixing.vh_images(x1, x2, torch.full((4,), h), torch.full((4,), w), one), x1)
    assert torch.equal(mixing.noisy_mixup_images(x1, x2, one, torch.zeros(4, 1, h, w)), x1)
    full_rows = mixing.first_rows(torch.full((4,), h), h)
    pasted, fraction = mixing.paste(x1, x2, full_rows)
    assert torch.equal(pasted, x1) and torch.equal(fraction, one)


def test_a_batch_of_one_is_mixed_with_itself(ds):
    x, y = batch(ds, n=1)
    moved = ("random_square", "random_column_interval", "random_row_interval")  # x₂'s patch comes from elsewhere
    for name in AREA:
        mixed, soft = AUGMENTATIONS.create(name, dataset=ds)(x, y, gen(0))
        assert torch.equal(soft, F.one_hot(y, 5).float())
        assert torch.equal(mixed, x) or name in moved


def test_soft_labels_mix_again(ds):
    x, y = batch(ds)
    first = AUGMENTATIONS.create("vertical_concat", dataset=ds)
    second = AUGMENTATIONS.create("mixup", dataset=ds)
    _, soft = second(*first(x, y, gen(0)), gen(1))
    torch.testing.assert_close(soft.sum(1), torch.ones(64), rtol=0, atol=1e-6)
    assert int((soft > 0).sum(1).max()) > 2  # up to four classes after two mixes


# ---- pairing and the epoch: B images give B outputs; each image once first and once second


def test_pairs_are_a_random_cycle_of_the_batch():
    def tag(x1, x2, generator):  # records which images were paired, in which role
        return x1 * 1000 + x2, torch.ones(x1.shape[0])

    aug = mixing._pairwise(tag, num_classes=64)
    x = torch.arange(64, dtype=torch.float32).view(64, 1, 1, 1)
    y = torch.arange(64)
    out, soft = aug(x, y, gen(0))
    first, second = (out.flatten() // 1000).long(), (out.flatten() % 1000).long()
    assert sorted(first.tolist()) == list(range(64)) and sorted(second.tolist()) == list(range(64))
    assert bool((first != second).all())
    assert torch.equal(soft.argmax(1), first)  # weight 1 goes to the first image's label
    partner = dict(zip(first.tolist(), second.tolist()))
    k, seen = 0, set()
    while k not in seen:  # one cycle through all 64: a random cyclic pairing
        seen.add(k)
        k = partner[k]
    assert len(seen) == 64
    assert not torch.equal(first, torch.arange(64))  # the order is drawn, not the batch's own


# ---- C2-6: per-pair draws; determinism


@pytest.mark.parametrize("name", METHODS)
def test_draws_differ_between_the_pairs_of_one_batch(ds, name):
    x1, x2 = ones_zeros()
    mixed, w = AUGMENTATIONS.create(name, dataset=ds).mix_pairs(x1, x2, gen(9))
    assert len(set(w.tolist())) > (3 if name == "random_square" else 8)  # a 5-pixel square has few clipped areas
    if name not in ("bc_plus", "vh_bc_plus"):  # BC+ of constant images is 0 everywhere
        assert len({tuple(m.flatten().tolist()) for m in mixed}) > 8  # different cuts, masks or λ


@pytest.mark.parametrize("name", METHODS)
def test_conformance_shapes_dtype_device_and_seeded_draws(ds, name):
    aug = AUGMENTATIONS.create(name, dataset=ds)
    x, y = batch(ds)
    a, ya = aug(x, y, gen(11))
    b, yb = aug(x, y, gen(11))
    c, _ = aug(x, y, gen(12))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    torch.manual_seed(0)  # the global generator plays no part
    d, _ = aug(x, y, gen(11))
    assert torch.equal(a, d)
    double, _ = aug(x.double(), y, gen(11))
    assert double.dtype == torch.float64
    assert not getattr(aug, "at_eval", False)  # evaluation never mixes


# ---- bad input


@pytest.mark.parametrize("name", WITH_ALPHA)
@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_alpha_must_be_positive(ds, name, alpha):
    with pytest.raises(SpecError) as err:
        AUGMENTATIONS.create({"name": name, "alpha": alpha}, dataset=ds)
    assert err.value.field == "alpha"


def test_a_square_larger_than_the_image_is_an_error(ds):
    with pytest.raises(SpecError, match="does not fit") as err:
        AUGMENTATIONS.create({"name": "random_square", "size": 11}, dataset=ds)  # 12×10 images
    assert err.value.field == "size"
    AUGMENTATIONS.create({"name": "random_square", "size": 10}, dataset=ds)


@pytest.mark.parametrize("name", [m for m in METHODS if m not in ("mixup", "bc_plus")])
def test_image_methods_refuse_tabular_data(name):
    with pytest.raises(SpecError, match="needs images"):
        AUGMENTATIONS.create(name, dataset=load_wine())


def test_mixup_and_bc_plus_mix_vectors_too():
    wine = load_wine()
    x, y = wine.splits["train"].rows(slice(0, 32))
    for name in ("mixup", "bc_plus"):
        mixed, soft = AUGMENTATIONS.create(name, dataset=wine)(x, y, gen(0))
        assert mixed.shape == x.shape and soft.shape == (32, 3)


def test_other_bad_parameters_name_their_field(ds):
    for spec, field in [({"name": "random_2x2", "middle": 0.0}, "middle"),
                        ({"name": "bc_plus", "std_eps": 0.0}, "std_eps"),
                        ({"name": "noisy_mixup", "sigma": -0.1}, "sigma"),
                        ({"name": "vertical_concat", "cut": "middle"}, "cut"),
                        ({"name": "random_row_interval", "offset": "left"}, "offset")]:
        with pytest.raises(SpecError) as err:
            AUGMENTATIONS.create(spec, dataset=ds)
        assert err.value.field == field
    tiny = image_dataset(shape=(1, 2, 2))
    with pytest.raises(SpecError, match="no room") as err:
        AUGMENTATIONS.create({"name": "random_2x2", "middle": 0.2}, dataset=tiny)
    assert err.value.field == "middle"


def test_cli_rejects_alpha_zero_with_exit_2_and_writes_nothing(tmp_path, capsys):
    from ablab.cli import main

    spec = tmp_path / "bad.yaml"
    spec.write_text("""name: bad
base:
  data: {name: digits, size: 8}
  model: mlp
  optimizer: {name: sgd, lr: 0.1}
  epochs: 1
  batch_size: 32
  augment:
    - {name: mixup, alpha: 0}
""")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "base.augment.0.alpha" in err and err.count("\n") == 1
    assert not out.exists()


# ---- end to end


def test_a_mixed_run_learns_digits_and_its_first_loss_is_soft_label_ce_of_the_mixture():
    from ablab import seeding
    from ablab.data.sampler import iterate_batches
    from ablab.spec import RunSpec
    from ablab.train.build import build_run
    from ablab.train.loop import train
    from conftest import TINY_BASE

    spec = RunSpec.model_validate({**TINY_BASE, "model": {"name": "mlp", "widths": [64]}, "epochs": 6,
                                   "augment": ["vertical_concat"], "record": {"every_steps": 1}})
    result = train(spec)
    assert result.status == "done", result.error
    test_acc = [v for (_, _, sp, n, v) in result.metrics if sp == "test" and n == "accuracy"]
    assert test_acc[0] < 0.3 and test_acc[-1] > 0.8  # digits, 10 classes: chance is 0.1
    # replay step 1 by hand: the same batch, the same mix, the initial model, CE against the soft labels
    run = build_run(spec)
    idx = next(iterate_batches(len(run.data.splits["train"]), 128, False, seeding.create_generator("shuffle", 0)))
    x, y = run.data.splits["train"].rows(idx)
    mixed, soft = run.augments[0](x, y, seeding.create_generator("augment", 0))
    with torch.no_grad():
        logp = torch.log_softmax(run.model(mixed).double(), dim=1)
    want = float(-(soft.double() * logp).sum(1).mean())
    first = [v for (s, _, sp, n, v) in result.metrics if sp == "batch" and n == "loss" and s == 1][0]
    assert first == pytest.approx(want, rel=1e-5)
    assert soft.max(1).values.min() < 1  # the step really trained on mixtures


# ---- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", METHODS)
def test_methods_on_cuda(ds, name):
    cuda = ds.to("cuda")
    aug = AUGMENTATIONS.create(name, dataset=cuda)
    x, y = batch(cuda, device="cuda")
    a, ya = aug(x, y, gen(1, "cuda"))
    b, yb = aug(x, y, gen(1, "cuda"))
    assert a.device.type == ya.device.type == "cuda" and a.shape == x.shape
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert bool((ya >= 0).all())
    torch.testing.assert_close(ya.sum(1), torch.ones(64, device="cuda"), rtol=0, atol=1e-6)
    if name in AREA:
        x1, x2 = ones_zeros(device="cuda")
        mixed, w = aug.mix_pairs(x1, x2, gen(2, "cuda"))
        assert torch.equal(mixed.mean((1, 2, 3)), w)


# ---- layouts: where x₁ is kept, and where x₂'s patch comes from


def _grid_masks(h: int, w: int):
    """Every (r, c) cut of an h×w image: masks rows<r, cols<c and the mixed-concat grid, with their cuts."""
    r = torch.arange(h + 1).view(-1, 1, 1, 1)
    c = torch.arange(w + 1).view(1, -1, 1, 1)
    top = torch.arange(h).view(1, 1, h, 1) < r
    left = torch.arange(w).view(1, 1, 1, w) < c
    return r.flatten(), c.flatten(), top.expand(h + 1, w + 1, h, w), left.expand(h + 1, w + 1, h, w)


@pytest.mark.parametrize("name", ["vertical_concat", "horizontal_concat", "mixed_concat"])
@pytest.mark.parametrize("cut", ["floor_beta", "uniform_index"])
def test_concat_layouts_and_the_mixed_concat_weight(ds, name, cut):
    _, h, w = SHAPE
    x1, x2 = ones_zeros(b=256)
    mixed, weight = AUGMENTATIONS.create({"name": name, "cut": cut}, dataset=ds).mix_pairs(x1, x2, gen(2))
    kept = mixed[:, 0] == 1
    rs, cs, top, left = _grid_masks(h, w)
    grid = {"vertical_concat": top, "horizontal_concat": left, "mixed_concat": top == left}[name]
    cuts = []
    for m, wt in zip(kept, weight):
        hits = (grid == m).flatten(2).all(2).nonzero()
        assert len(hits) > 0, "the mask is not a concat of this kind"
        r, c = (int(v) for v in hits[0])  # all-x₁ and all-x₂ grids have two readings: the smaller cut
        cuts.append(r if name != "horizontal_concat" else c)
        if name == "mixed_concat":  # L404: a₁a₂ + (1 − a₁)(1 − a₂), the realised fractions
            a1, a2 = r / h, c / w
            assert float(wt) == pytest.approx(a1 * a2 + (1 - a1) * (1 - a2), abs=1e-6)
    size = w if name == "horizontal_concat" else h
    if cut == "uniform_index":  # the code's U{0..H−1}: never all of x₁
        assert max(cuts) < size and min(cuts) == 0
    assert len(set(cuts)) >= size - 1


@pytest.mark.parametrize("name,dim", [("random_row_interval", 2), ("random_column_interval", 3)])
def test_intervals_replace_one_band_by_a_band_of_x2(ds, name, dim):
    _, h, w = SHAPE
    n = h if dim == 2 else w
    x1 = torch.full((256, *SHAPE), -1.0)
    x2 = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(256, *SHAPE).contiguous()
    mixed, weight = AUGMENTATIONS.create(name, dataset=ds).mix_pairs(x1, x2, gen(3))
    band = (mixed[:, 0] != -1).any(dim=-1 if dim == 2 else -2)  # (B, n): the replaced rows (columns)
    lengths, moved = band.sum(1), 0
    for m, b, wt, length in zip(mixed[:, 0], band, weight, lengths):
        idx = b.nonzero().flatten()
        if len(idx) == 0:
            continue
        assert int(idx[-1] - idx[0]) + 1 == len(idx)  # one contiguous band
        src = m[idx[0]] if dim == 2 else m[:, idx[0]]
        start = int(src[0]) // w if dim == 2 else int(src[0]) % w  # where in x₂ the band starts
        want = x2[0, 0, start:start + len(idx)] if dim == 2 else x2[0, 0, :, start:start + len(idx)]
        got = m[idx[0]:idx[-1] + 1] if dim == 2 else m[:, idx[0]:idx[-1] + 1]
        assert torch.equal(got, want)
        moved += start != int(idx[0])
    torch.testing.assert_close(weight, (n - lengths).float() / n, rtol=0, atol=0)
    assert moved > 50 and int(lengths.min()) == 0 and int(lengths.max()) >= n - 1


def test_random_square_replaces_a_clipped_square_by_a_patch_of_x2_from_elsewhere(ds):
    _, h, w = SHAPE
    side = 4
    x1 = torch.full((256, *SHAPE), -1.0)
    x2 = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(256, *SHAPE).contiguous()
    aug = AUGMENTATIONS.create({"name": "random_square", "size": side}, dataset=ds)
    mixed, weight = aug.mix_pairs(x1, x2, gen(4))
    moved = 0
    for m, wt in zip(mixed[:, 0], weight):
        rows = (m != -1).any(1).nonzero().flatten()
        cols = (m != -1).any(0).nonzero().flatten()
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        assert bool((m[r0:r1, c0:c1] != -1).all()) and int((m != -1).sum()) == (r1 - r0) * (c1 - c0)
        assert r1 - r0 == side or r0 == 0 or r1 == h  # smaller only where clipped by the border
        assert c1 - c0 == side or c0 == 0 or c1 == w
        s = int(m[r0, c0])
        sr, sc = divmod(s, w)
        assert torch.equal(m[r0:r1, c0:c1], x2[0, 0, sr:sr + r1 - r0, sc:sc + c1 - c0])
        assert float(wt) == pytest.approx(1 - (r1 - r0) * (c1 - c0) / (h * w), abs=1e-7)
        moved += (sr, sc) != (r0, c0)
    assert moved > 200


# ---- the baseline arm


def test_baseline_returns_the_batch_unchanged_and_its_pair_rule_is_the_first_image(ds):
    x, y = batch(ds)
    g = gen(0)
    before = g.get_state()
    out, labels = AUGMENTATIONS.create("baseline", dataset=ds)(x, y, g)
    assert torch.equal(out, x) and torch.equal(labels, y) and labels.dtype == y.dtype  # indices stay indices
    assert torch.equal(g.get_state(), before)  # no draw: a baseline run is a run without the step
    first, w = AUGMENTATIONS.create("baseline", dataset=ds).mix_pairs(x[:4], x[4:8], g)
    assert torch.equal(first, x[:4]) and torch.equal(w, torch.ones(4))


def test_the_seventeen_arms_are_registered_in_table_order():
    assert mixing.METHODS[0] == "baseline" and set(mixing.METHODS[1:]) == set(METHODS)
    assert set(mixing.METHODS) <= set(AUGMENTATIONS.list_names())


def test_baseline_works_on_tabular_data_too():
    wine = load_wine()
    x, y = wine.splits["train"].rows(slice(0, 8))
    out, labels = AUGMENTATIONS.create("baseline", dataset=wine)(x, y, gen(0))
    assert torch.equal(out, x) and torch.equal(labels, y)


# ---- C2-5: the training loop mixes after crop and flip


def _first_loss(spec, order):
    """The first step's loss replayed by hand with the run's streams, the augment steps applied in ``order``."""
    from ablab import seeding
    from ablab.data.sampler import iterate_batches
    from ablab.train.build import build_run

    run = build_run(spec)
    idx = next(iterate_batches(len(run.data.splits["train"]), spec.batch_size, False,
                               seeding.create_generator("shuffle", 0)))
    x, y = run.data.splits["train"].rows(idx)
    g = seeding.create_generator("augment", 0)
    for i in order:
        x, y = run.augments[i](x, y, g)
    with torch.no_grad():
        logp = torch.log_softmax(run.model(x).double(), dim=1)
    return float(-(y.double() * logp).sum(1).mean())


def test_the_training_loop_mixes_after_crop_and_flip():
    from ablab.spec import RunSpec
    from ablab.train.loop import train
    from conftest import TINY_BASE

    spec = RunSpec.model_validate({**TINY_BASE, "data": {"name": "digits", "size": 16}, "epochs": 1,
                                   "augment": [{"name": "random_crop", "padding": 3}, "hflip", "vertical_concat"],
                                   "record": {"every_steps": 1}})
    result = train(spec)
    first = [v for (s, _, sp, n, v) in result.metrics if sp == "batch" and n == "loss" and s == 1][0]
    assert first == pytest.approx(_first_loss(spec, [0, 1, 2]), rel=1e-6)   # crop, flip, then the mix
    swapped = _first_loss(spec, [2, 0, 1])                                      # the mix first
    assert abs(swapped - first) > 1e-3 * abs(first)  # the order shows in the loss, so the check can fail



# ---- bad input through the CLI: one line naming the field, exit 2, nothing written


@pytest.mark.parametrize("data, step, field, words", [
    ("{name: digits, size: 8}", "{name: vertical_mixup}", "base.augment.0", "unknown augmentation 'vertical_mixup'"),
    ("{name: digits, size: 8}", "{name: random_square, size: 9}", "base.augment.0.size", "does not fit"),
    ("wine", "random_rows", "base.augment.0", "needs images"),
    ("{name: digits, size: 8}", "{name: vh_mixup, alpha: -1}", "base.augment.0.alpha", "greater than 0"),
])
def test_cli_bad_mixing_input_is_one_error_naming_the_field(tmp_path, capsys, data, step, field, words):
    from ablab.cli import main

    spec = tmp_path / "bad.yaml"
    spec.write_text(f"name: bad\nbase:\n  data: {data}\n  model: mlp\n  optimizer: {{name: sgd, lr: 0.1}}\n"
                    f"  epochs: 1\n  batch_size: 32\n  augment: [{step}]\n")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert field in err and words in err and err.count("\n") == 1, err
    assert not out.exists()


# ---- λ ~ Beta(α, α) without underflow (seed002.md K7: every method draws Beta(α, α), L365)


def test_at_tiny_alpha_beta_draws_are_a_fair_coin_not_a_half():
    """α = 0.01: float32 gammas underflow together in 17.7 % of draws; in log space no λ is 0.5 by accident."""
    from scipy import stats

    n, alpha = 1_000_000, 0.01
    lam = mixing.draw_beta(n, alpha, gen(3), torch.device("cpu")).double().numpy()
    true = stats.beta.cdf(0.51, alpha, alpha) - stats.beta.cdf(0.49, alpha, alpha)  # ≈ 3.95e-4
    near_half = np.mean((lam >= 0.49) & (lam <= 0.51))
    assert abs(near_half - true) < 5 * math.sqrt(true * (1 - true) / n), (near_half, true)
    assert abs(lam.mean() - 0.5) < 5 * float(stats.beta.std(alpha, alpha)) / math.sqrt(n)
    assert np.mean(lam == 0.5) < 1e-4  # was 0.177
    assert 0.45 < np.mean(lam < 0.5) < 0.55 and np.isfinite(lam).all() and lam.min() >= 0 and lam.max() <= 1


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.9, 1.0, 2.0])
def test_beta_draws_match_scipy_beta(alpha):
    """Two-sample KS against scipy's Beta(α, α) rounded to float32 as ours are (λ near 1 rounds to 1.0 in both)."""
    from scipy import stats

    n = 20_000
    ours = mixing.draw_beta(n, alpha, gen(11), torch.device("cpu")).numpy()
    ref = stats.beta.rvs(alpha, alpha, size=n, random_state=np.random.default_rng(5)).astype(np.float32)
    assert stats.ks_2samp(ours, ref).pvalue > 0.01
    assert abs(float(ours.mean()) - 0.5) < 5 * float(stats.beta.std(alpha, alpha)) / math.sqrt(n)


def test_beta_draws_at_alpha_one_and_above_are_the_plain_gamma_ratio():
    """α ≥ 1 keeps the draws it had (G₁ / (G₁ + G₂) from one gamma draw each), bit for bit."""
    for alpha in (1.0, 2.0):
        g = torch._standard_gamma(torch.full((2, 64), alpha), generator=gen(4))
        assert torch.equal(mixing.draw_beta(64, alpha, gen(4), torch.device("cpu")), g[0] / (g[0] + g[1]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("alpha", [0.01, 0.5, 1.0])
def test_beta_draws_on_cuda_stay_on_the_device_and_have_no_underflow_halves(alpha):
    from scipy import stats

    n = 200_000
    lam = mixing.draw_beta(n, alpha, gen(2, "cuda"), torch.device("cuda"))
    assert lam.device.type == "cuda" and torch.equal(lam, mixing.draw_beta(n, alpha, gen(2, "cuda"), torch.device("cuda")))
    lam = lam.double().cpu().numpy()
    assert np.isfinite(lam).all() and lam.min() >= 0 and lam.max() <= 1 and np.mean(lam == 0.5) < 1e-3
    assert abs(lam.mean() - 0.5) < 5 * float(stats.beta.std(alpha, alpha)) / math.sqrt(n)
