"""The colour a shipped spec's crop pads with: its augment steps up to the mix, on constant images."""

from __future__ import annotations

from pathlib import Path

import torch


def padded_raw_colours(base: dict, data_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw [0, 1] values of the padded pixels, the dataset's per-channel mean) after the spec's crop, flip and
    normalize steps on 64 constant (0.25) CIFAR-10 images; raw = output · std + mean of the normalize step."""
    from ablab.registry import DATASETS
    from ablab.spec import RunSpec
    from ablab.train.build import _augmentations

    steps_written = [a for a in base["augment"] if (a if isinstance(a, str) else a["name"])
                     in ("normalize", "random_crop", "hflip")]
    spec = RunSpec.model_validate({**base, "data": {**base["data"], "name": "cifar10", "path": str(data_path)},
                                   "init_from": None, "augment": steps_written})
    data = DATASETS.create(spec.data)
    x, y = torch.full((64, 3, 32, 32), 0.25), torch.zeros(64, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for step in _augmentations(spec, data):
        x, y = step(x, y, g)
    norm = next(a for a in steps_written if (a if isinstance(a, str) else a["name"]) == "normalize")
    stats = norm if isinstance(norm, dict) and "mean" in norm else {"mean": data.mean, "std": data.std}
    mean, std = torch.tensor(stats["mean"]).view(3, 1, 1), torch.tensor(stats["std"]).view(3, 1, 1)
    raw = x * std + mean
    pad = ~torch.isclose(raw, torch.full_like(raw, 0.25), atol=1e-5)
    assert pad.any() and (~pad).any(), "no padded pixel (or no image pixel) in 64 crops"
    return raw[pad], mean.expand_as(raw)[pad]
