"""Test-time augmentation evaluators: logits averaged over views of each image (seed 002 §5.5, App. B.3).

``tta_flip``: the image and its mirror (2 views). ``tta_flip_crop``: every window of the image
zero-padded by ``pad`` pixels, (2·pad + 1)² offsets, each unflipped and mirrored (pad 4: 162 views;
the centre unflipped window is the image itself). ``tta_crop``: the windows only (MNIST: pad 1,
9 views). As in the authors' code the views' **logits** are averaged, over every member model of
a post-hoc unit too (a snapshot ensemble with TTA).

Views are cut from the stored image before the run's evaluation transforms (``normalize``), as
``random_crop`` does in training, so the padding is black, normalize(0) = −mean/std per channel.
They are built on the device in chunks of at most ``eval_batch_size`` images per forward pass.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveInt

from ablab.data.base import Split
from ablab.artifacts import save_npy, tta_predictions_kind, tta_predictions_name
from ablab.errors import SpecError
from ablab.registry import EVALUATORS
from ablab.train.evaluators import (MAX, MIN, Epochs, EvalContext, Evaluation, Evaluator, Sizing, SplitName, correct,
                                    stored_labels)

View = tuple[int, int, bool]  # (top, left) offset of the window in the padded image, mirrored?


def crop_views(pad: int, flips: tuple[bool, ...]) -> list[View]:
    """Every window offset of an image padded by ``pad``, for each flip in ``flips``."""
    span = range(2 * pad + 1)
    return [(top, left, flip) for flip in flips for top in span for left in span]


def make_views(padded: torch.Tensor, views: list[View], pad: int) -> torch.Tensor:
    """The ``views`` of a padded batch [B, C, H + 2p, W + 2p], stacked view-major: [V·B, C, H, W]."""
    h, w = padded.shape[2] - 2 * pad, padded.shape[3] - 2 * pad
    out = []
    for top, left, flip in views:
        window = padded[:, :, top: top + h, left: left + w]
        out.append(window.flip(-1) if flip else window)
    return torch.cat(out)


@torch.no_grad()
def tta_logits(ctx: EvalContext, split: Split, views: list[View], pad: int) -> torch.Tensor:
    """Mean logits over ``views`` and every member model, float32 [N, classes], in split order."""
    total: Optional[torch.Tensor] = None
    for m in ctx.members:
        was_training = m.module.training
        m.module.eval()
        per_batch = [_batch_sum(m.forward, ctx, x, views, pad) for x in _raw_batches(split, ctx.batch_size)]
        m.module.train(was_training)
        summed = torch.cat(per_batch)
        total = summed if total is None else total + summed
    return total / (len(views) * len(ctx.members))


def _raw_batches(split: Split, batch_size: int):
    for start in range(0, len(split), batch_size):
        yield split.rows(slice(start, start + batch_size))[0]


def _batch_sum(forward, ctx: EvalContext, x: torch.Tensor, views: list[View], pad: int) -> torch.Tensor:
    """Sum over ``views`` of the logits of one batch; at most ``ctx.batch_size`` images per forward pass."""
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    per_pass = max(1, ctx.batch_size // len(x))
    total: Optional[torch.Tensor] = None
    for start in range(0, len(views), per_pass):
        chunk = views[start: start + per_pass]
        images = make_views(padded, chunk, pad)
        for transform in ctx.transforms:
            images, _ = transform(images, None, None)
        out = forward(images).float().reshape(len(chunk), len(x), -1).sum(0)
        total = out if total is None else total + out
    return total


def score(logits: torch.Tensor, y: torch.Tensor, ctx: EvalContext, prefix: str) -> dict[str, float]:
    """Loss and accuracy (MSE for regression) of averaged logits, named ``{prefix}_loss`` etc."""
    if len(logits) == 0:
        return {}
    out = {f"{prefix}_loss": ctx.loss_fn(logits, y).item()}
    if ctx.classification:
        out[f"{prefix}_accuracy"] = correct(logits, y).item() / len(logits)
    else:
        out[f"{prefix}_mse"] = F.mse_loss(logits, y.reshape(logits.shape).to(logits.dtype)).item()
    return out


class _TTA(Evaluator):
    """Base of the TTA evaluators: views from ``view_list``, metrics and optional logits."""

    members = None  # any number of models: their logits are averaged with the views'
    prefix = ""

    def __init__(self, pad: int, store_logits: bool, splits: Optional[list[SplitName]], epochs: Epochs):
        super().__init__(splits, epochs)
        self.pad, self.store_logits = pad, store_logits

    def view_list(self) -> list[View]:
        raise NotImplementedError

    def stored_bytes(self, sizing: Sizing) -> int:
        return sizing.logits() if self.store_logits else 0

    def stores_labels(self) -> bool:
        return self.store_logits

    def directions(self, classification: bool) -> dict[str, str]:
        if classification:
            return {f"{self.prefix}_loss": MIN, f"{self.prefix}_accuracy": MAX}
        return {f"{self.prefix}_loss": MIN, f"{self.prefix}_mse": MIN}

    def check(self, data) -> None:
        shape = tuple(data.in_shape)
        if len(shape) != 3:
            raise SpecError(f"evaluator '{self.prefix}' crops and mirrors images (C, H, W); dataset '{data.name}' has "
                            f"examples of shape {shape}", field="name")

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        logits = tta_logits(ctx, split, self.view_list(), self.pad)
        artifacts = {}
        if self.store_logits:
            blob = save_npy(logits.cpu().numpy().astype(np.float32))
            artifacts[tta_predictions_name(self.prefix, split_name, epoch)] = (tta_predictions_kind(self.prefix), blob)
            if ctx.classification:  # self-contained like the predictions evaluator's files
                artifacts.update(stored_labels(split_name, split, epoch))
        return Evaluation(score(logits, split.y, ctx, self.prefix), artifacts)


@EVALUATORS.register("tta_flip")
class FlipTTA(_TTA):
    """Logits averaged over the image and its left-right mirror (2 views)."""

    prefix = "tta_flip"

    def __init__(self, store_logits: bool = False, splits: Optional[list[SplitName]] = None, epochs: Epochs = "last"):
        super().__init__(0, store_logits, splits, epochs)

    def view_list(self) -> list[View]:
        return [(0, 0, False), (0, 0, True)]


@EVALUATORS.register("tta_flip_crop")
class FlipCropTTA(_TTA):
    """Logits averaged over every window of the zero-padded image, each also mirrored ((2·pad + 1)²·2 views)."""

    prefix = "tta_flip_crop"

    def __init__(self, pad: NonNegativeInt = 4, store_logits: bool = False, splits: Optional[list[SplitName]] = None,
                 epochs: Epochs = "last"):
        super().__init__(pad, store_logits, splits, epochs)

    def view_list(self) -> list[View]:
        return crop_views(self.pad, (False, True))


@EVALUATORS.register("tta_crop")
class CropTTA(_TTA):
    """Logits averaged over every window of the zero-padded image ((2·pad + 1)² views; MNIST: pad 1)."""

    prefix = "tta_crop"

    def __init__(self, pad: PositiveInt = 1, store_logits: bool = False, splits: Optional[list[SplitName]] = None,
                 epochs: Epochs = "last"):
        super().__init__(pad, store_logits, splits, epochs)

    def view_list(self) -> list[View]:
        return crop_views(self.pad, (False,))
