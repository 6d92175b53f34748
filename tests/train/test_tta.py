"""Test-time augmentation: the views, the black padding, logit averaging, and bad input."""

import io

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ablab.cli import main
from ablab.data.augment import normalize
from ablab.registry import DATASETS, EVALUATORS, LOSSES
from ablab.train.evaluators import EvalContext, ModelView, outputs
from ablab.train.tta import crop_views, make_views, tta_logits

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


def _ctx(models, data, batch_size=64, norm=True):
    c = data.in_shape[0]
    transforms = (normalize(data, MEAN[:c], STD[:c]),) if norm else ()
    return EvalContext([ModelView(m, m) for m in models], LOSSES.create("cross_entropy"), True, batch_size, 32,
                       transforms, torch.device("cpu"))


def test_flip_crop_has_162_distinct_views_and_the_centre_unflipped_one_is_the_image():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    views = crop_views(4, (False, True))
    assert len(views) == 162 and len(set(views)) == 162
    out = make_views(torch.nn.functional.pad(x, (4, 4, 4, 4)), views, 4).reshape(162, 2, 3, 32, 32)
    assert len(torch.unique(out.reshape(162, -1), dim=0)) == 162
    centre = views.index((4, 4, False))
    assert torch.equal(out[centre], x)
    assert torch.equal(out[views.index((4, 4, True))], x.flip(-1))
    # a corner view, independently: numpy's zero padding, a window, a mirror
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    np.testing.assert_array_equal(out[views.index((0, 8, True))].numpy(), padded[:, :, 0:32, 8:40][..., ::-1])
    assert len(crop_views(1, (False,))) == 9  # MNIST's crop TTA


class _Record(nn.Module):
    """Remembers every batch it sees; outputs a fixed linear map of the image."""

    def __init__(self, c=3, hw=32):
        super().__init__()
        self.fc = nn.Linear(c * hw * hw, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.fc(x.flatten(1))


def test_the_padding_is_normalize_of_black_per_channel():
    data = DATASETS.create({"name": "digits", "size": 32, "channels": 3})
    model = _Record()
    ev = EVALUATORS.create({"name": "tta_flip_crop"})
    split = data.splits["test"]
    ev.evaluate(_ctx([model], data, batch_size=4096), "test", split, 0)
    first = model.seen[0][: len(split)]  # view (0, 0, unflipped): 4 rows and columns of padding at the top left
    black = (torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)
    for c in range(3):
        assert torch.equal(first[:, c, :4, :], torch.full_like(first[:, c, :4, :], black[c].item()))
        assert torch.equal(first[:, c, :, :4], torch.full_like(first[:, c, :, :4], black[c].item()))
    assert not torch.equal(first[:, :, 4:, 4:], torch.full_like(first[:, :, 4:, 4:], black[0].item()))


class _Symmetric(nn.Module):
    """f(x) = g(x) + g(mirror(x)): invariant to left-right flips, bitwise."""

    def __init__(self):
        super().__init__()
        self.g = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))

    def forward(self, x):
        return self.g(x) + self.g(x.flip(-1))


def test_flip_tta_of_a_flip_invariant_model_is_the_plain_evaluation():
    torch.manual_seed(0)
    data = DATASETS.create("digits")
    model = _Symmetric()
    model(torch.zeros(1, 1, 8, 8))
    split = data.splits["test"]
    ctx = _ctx([model], data, batch_size=50, norm=False)
    plain = outputs(model, model, split, 50)
    result = EVALUATORS.create({"name": "tta_flip", "store_logits": True}).evaluate(ctx, "test", split, 3)
    stored = np.load(io.BytesIO(result.artifacts["predictions_tta_flip_test_e0003.npy"][1]))
    np.testing.assert_allclose(stored, plain.numpy(), rtol=0, atol=1e-6)
    standard = EVALUATORS.create("standard").evaluate(ctx, "test", split, 3).metrics
    assert result.metrics["tta_flip_accuracy"] == pytest.approx(standard["accuracy"], abs=1e-12)
    assert result.metrics["tta_flip_loss"] == pytest.approx(standard["loss"], rel=1e-5)


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror():
    """A model that tells left from right: its flip TTA is the mean of f(x) and f(mirror(x)), not f(x)."""
    torch.manual_seed(0)
    data = DATASETS.create("digits")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    split = data.splits["test"]
    ctx = _ctx([model], data, batch_size=50, norm=False)
    result = EVALUATORS.create({"name": "tta_flip", "store_logits": True}).evaluate(ctx, "test", split, 3)
    stored = np.load(io.BytesIO(result.artifacts["predictions_tta_flip_test_e0003.npy"][1]))
    with torch.no_grad():
        plain, mirrored = model(split.x).numpy(), model(split.x.flip(-1)).numpy()
    assert np.abs(plain - mirrored).max() > 0.1  # the two views differ for this model
    np.testing.assert_allclose(stored, (plain + mirrored) / 2, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch_size", [7, 360, 5000])
def test_crop_tta_averages_every_views_logits_over_every_member(batch_size):
    """Against a direct loop: each view padded by numpy, normalized, through each member; the mean logits."""
    torch.manual_seed(1)
    data = DATASETS.create("digits")
    members = [nn.Sequential(nn.Flatten(), nn.Linear(64, 10)) for _ in range(2)]
    split = data.splits["test"]
    got = tta_logits(_ctx(members, data, batch_size), split, crop_views(1, (False, True)), 1)
    padded = np.pad(split.x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((len(split), 10))
    with torch.no_grad():
        for m in members:
            for top in range(3):
                for left in range(3):
                    for flip in (False, True):
                        v = padded[:, :, top: top + 8, left: left + 8]
                        v = v[..., ::-1] if flip else v
                        v = (torch.tensor(v.copy()) - torch.tensor(MEAN[0])) / torch.tensor(STD[0])
                        want += m(v).double().numpy()
    np.testing.assert_allclose(got.numpy(), want / 36, rtol=1e-5, atol=1e-5)


def test_tta_on_tabular_data_is_one_spec_error_and_writes_nothing(tmp_path, capsys):
    study = {"name": "tab", "base": {"data": "wine", "model": {"name": "mlp", "widths": [8]},
                                     "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 32,
                                     "device": "cpu", "record": {"evaluators": ["standard", "tta_crop"]}}}
    path = tmp_path / "tab.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "crops and mirrors images" in err and "record.evaluators.1" in err, err
    assert not (tmp_path / "out").exists()
