"""The shipped specs that reproduce DeepOBS (or the thesis built on it) use DeepOBS' data settings."""

from pathlib import Path

import pytest
import torch

from ablab.data.sampler import iterate_batches, steps_per_epoch
from ablab.spec import expand, load_study

ROOT = Path(__file__).resolve().parents[2]
# full-size specs whose header claims DeepOBS' pipeline (the CPU twins and bn_dissect/cpu.yaml do not)
CLAIMS = sorted(p for p in [*(ROOT / "studies" / "deepobs").glob("*.yaml"), *(ROOT / "studies" / "bn_dissect").rglob("*.yaml")]
                if not p.stem.endswith("_cpu") and p.stem != "cpu")
# deepobs/pytorch/datasets/cifar10.py and cifar100.py
CONSTANTS = {
    "cifar10": {"mean": [0.49139968, 0.48215841, 0.44653091], "std": [0.24703223, 0.24348513, 0.26158784]},
    "cifar100": {"mean": [0.50707516, 0.48654887, 0.44091784], "std": [0.26733429, 0.25643846, 0.27615047]},
}
JITTER = {"name": "color_jitter", "brightness": 63 / 255, "contrast": (0.2, 1.8), "saturation": (0.5, 1.5), "eight_bit": True}
TRAIN, TEST = 40_000, 10_000  # DeepOBS: 50k training images less a 10k validation cut; the test set


def test_every_deepobs_and_thesis_spec_is_checked():
    assert len(CLAIMS) == 10


@pytest.mark.parametrize("path", CLAIMS, ids=[str(p.relative_to(ROOT / "studies")) for p in CLAIMS])
def test_spec_uses_deepobs_data_settings(path, tmp_path):
    variants = expand(load_study(path, [f"data.path={tmp_path}"]), str(path))  # settings only: no data read
    for spec in (v.spec for v in variants):
        data = spec.data["name"]
        assert spec.data["val_size"] == 10_000
        assert spec.drop_last
        assert spec.augment == [
            {"name": "random_crop", "padding": 2, "mode": "zero"},
            {"name": "hflip", "p": 0.5},
            JITTER,
            {"name": "normalize", **CONSTANTS[data]},
        ]
    # every training batch full: 312 of 128 or 156 of 256 per epoch, 64 images left out either way
    assert len({v.spec.batch_size for v in variants}) == 1
    steps = steps_per_epoch(TRAIN, spec.batch_size, spec.drop_last)
    assert steps == {128: 312, 256: 156}[spec.batch_size]
    batches = list(iterate_batches(TRAIN, spec.batch_size, spec.drop_last, torch.Generator().manual_seed(0)))
    assert len(batches) == steps and {len(b) for b in batches} == {spec.batch_size}
    # the header says which settings follow DeepOBS and how many test images each side evaluates
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    full = TEST // spec.batch_size * spec.batch_size  # 9,984 test images in full batches
    assert "As DeepOBS" in header or "Data as DeepOBS'" in header
    assert "Ours:" in header and f"{full:,}" in header and f"{TEST:,}" in header
    assert f"{steps} steps of {spec.batch_size}" in header
