"""Evaluators: what is measured on a split at evaluation time (registered in ``EVALUATORS``).

An evaluator is listed in ``record.evaluators`` (training runs) or in a post-hoc study's
``base.evaluators``. At each epoch it asks for (``epochs``: ``every`` evaluation epoch, ``last``, or
a list), on each split it names (``splits``; None: the run's ``eval_splits``), it returns an
``Evaluation``: metric values, optional artifacts (bytes with their kind), and it declares for
each metric whether higher is better (``directions``), never left to be guessed from a name.

An evaluator owns its pass over the split: it may run without gradients (the default ones), with
gradients (attacks), with several views of each example (test-time augmentation) or with changed
norm-layer behaviour, and it sees every member model of a post-hoc unit (``ctx.members``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Union

import numpy as np
import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, confloat
from torch import nn

from ablab import seeding
from ablab.artifacts import (ACTIVATIONS_KIND, LABELS_KIND, PREDICTIONS_KIND, activations_name, labels_name,
                             predictions_name, save_npy, save_npz)
from ablab.data.base import Split
from ablab.norm.weighing import check_alpha, example_weighing, weighable_layers
from ablab.registry import EVALUATORS

Forward = Callable[[torch.Tensor], torch.Tensor]
Epochs = Union[Literal["every", "last"], list[NonNegativeInt]]
SplitName = Literal["train", "val", "test"]
MAX = "max"
MIN = "min"


@dataclass
class ModelView:
    """One model as evaluators call it: the module (for hooks, parameters) and its forward."""

    module: nn.Module
    forward: Forward
    label: str = ""


@dataclass
class EvalContext:
    """Everything an evaluator may use: the model(s), the loss, the task and the run's settings."""

    members: list[ModelView]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classification: bool
    batch_size: int  # evaluation batch size
    train_batch_size: int  # the training batch size (sharpness is measured on training batches)
    transforms: tuple = ()  # deterministic preprocessing among the augmentations (``normalize``)
    device: torch.device = torch.device("cpu")

    @property
    def model(self) -> ModelView:
        return self.members[0]


@dataclass
class Evaluation:
    """Metric values (name -> float) and artifacts (name -> (kind, bytes)) of one evaluator on one split."""

    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, tuple[str, bytes]] = field(default_factory=dict)


NPY_HEADER = 128  # bytes of a .npy file's header (numpy pads it to a multiple of 64; 128 for 1-2-D arrays)


@dataclass
class Sizing:
    """What an evaluator's stored files depend on: one split's examples, the classes, the model (built lazily)."""

    examples: int
    classes: int
    classification: bool
    in_shape: tuple[int, ...] = ()
    build_model: Callable[[], Optional[nn.Module]] = lambda: None

    def labels(self) -> int:
        """Bytes of the split's stored class labels (int64 [N]); 0 for a regression."""
        return NPY_HEADER + 8 * self.examples if self.classification else 0

    def logits(self) -> int:
        """Bytes of the split's stored logits (float32 [N, classes]) and its labels."""
        return NPY_HEADER + 4 * self.examples * self.classes + self.labels()


class Evaluator:
    """Base: when and where it runs. Subclasses implement ``evaluate`` and ``directions``."""

    members: Optional[int] = 1  # models it evaluates at once (None: any number)
    min_members: int = 1
    stores_predictions: bool = False  # writes every example's outputs (float32 × classes): `ablab validate` counts them

    def __init__(self, splits: Optional[list[SplitName]], epochs: Epochs):
        self.splits = splits
        self.epochs = epochs

    def splits_for(self, default: list[str]) -> list[str]:
        return list(self.splits) if self.splits is not None else list(default)

    def runs_at(self, epoch: int, last: bool, every: int) -> bool:
        """Evaluate after ``epoch`` (0 before training)? ``every``: the run's ``eval_every_epochs``."""
        if self.epochs == "last":
            return last
        if self.epochs == "every":
            return last or epoch % every == 0
        return epoch in self.epochs

    def directions(self, classification: bool) -> dict[str, str]:
        raise NotImplementedError

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        raise NotImplementedError

    def check(self, data) -> None:
        """Raise ``SpecError`` if this evaluator cannot run on the ``Dataset`` (checked before any run)."""

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ValueError`` if this evaluator cannot run on the model (built on the meta device, before any run)."""

    def stored_bytes(self, sizing: Sizing) -> int:
        """Bytes its files take per split and evaluation (``ablab validate``'s artifact estimate); 0: it stores none."""
        return sizing.logits() if self.stores_predictions else 0

    def stores_labels(self) -> bool:
        """Whether it stores the split's labels file beside its logits (one file, shared by such evaluators)."""
        return self.stores_predictions


def batches(split: Split, batch_size: int, transforms: tuple = ()):
    """The split in order, in batches of ``batch_size`` (the last may be short), preprocessed."""
    for start in range(0, len(split), batch_size):
        x, y = split.rows(slice(start, start + batch_size))
        for transform in transforms:
            x, y = transform(x, y, None)
        yield x, y


def correct(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of examples whose arg-max output is the (hard or soft) label's arg-max."""
    labels = y.argmax(dim=-1) if y.is_floating_point() else y
    return (output.argmax(dim=-1) == labels).sum()


@torch.no_grad()
def loss_and_score(forward: Forward, module: nn.Module, split: Split, loss_fn, classification: bool,
                   batch_size: int, transforms: tuple = ()) -> dict[str, float]:
    """Mean loss and accuracy (classification) or MSE (regression) over every example of ``split``.

    Each batch's mean loss is weighted by its size, so a short last batch counts per example.
    """
    was_training = module.training
    module.eval()
    loss_sum = torch.zeros((), device=split.x.device, dtype=torch.float64)
    extra = torch.zeros((), device=split.x.device, dtype=torch.float64)
    for x, y in batches(split, batch_size, transforms):
        out = forward(x)
        loss_sum += loss_fn(out, y).double() * len(x)
        if classification:
            extra += correct(out, y)
        else:
            extra += nn.functional.mse_loss(out, y.reshape(out.shape).to(out.dtype), reduction="sum").double() / out[0].numel()
    module.train(was_training)
    n = len(split)
    if n == 0:
        return {}
    return {"loss": (loss_sum / n).item(), ("accuracy" if classification else "mse"): (extra / n).item()}


@torch.no_grad()
def outputs(forward: Forward, module: nn.Module, split: Split, batch_size: int, transforms: tuple = ()) -> torch.Tensor:
    """The model's outputs for every example of ``split`` in order, float32, [N, ...] on the device."""
    was_training = module.training
    module.eval()
    out = [forward(x).float() for x, _ in batches(split, batch_size, transforms)]
    module.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


@EVALUATORS.register("standard")
class StandardEvaluator(Evaluator):
    """Mean loss, and accuracy (classification) or MSE (regression), of the model on each split."""

    def __init__(self, splits: Optional[list[SplitName]] = None, epochs: Epochs = "every"):
        super().__init__(splits, epochs)

    def directions(self, classification: bool) -> dict[str, str]:
        return {"loss": MIN, "accuracy": MAX} if classification else {"loss": MIN, "mse": MIN}

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        m = ctx.model
        return Evaluation(loss_and_score(m.forward, m.module, split, ctx.loss_fn, ctx.classification,
                                         ctx.batch_size, ctx.transforms))


@EVALUATORS.register("example_weighing")
class ExampleWeighing(Evaluator):
    """Loss and accuracy with inference example weighing at α (seed 002, Eq. 4.3), as weighed_loss and weighed_accuracy.

    Every norm layer with moving averages (``batchnorm``, ``ghost_batchnorm``, ``batch_group_norm``,
    ``group_norm`` …) normalizes each example with α·(its own statistics) + (1 − α)·(the moving
    averages); α = 0 is ordinary eval-mode BN, α = 1 the example alone (GroupNorm for a GN layer).
    One evaluation pass per split; a post-hoc study sweeps α over stored checkpoints as a grid axis
    ``evaluators.0.alpha`` (k values: k passes), §4.3.1, Fig. 4.1–4.4.
    """

    def __init__(self, alpha: confloat(ge=0.0, le=1.0) = 0.0, splits: Optional[list[SplitName]] = None,
                 epochs: Epochs = "last"):
        super().__init__(splits, epochs)
        self.alpha = check_alpha(alpha)

    def directions(self, classification: bool) -> dict[str, str]:
        return {"weighed_loss": MIN, "weighed_accuracy": MAX} if classification else {"weighed_loss": MIN,
                                                                                       "weighed_mse": MIN}

    def check_model(self, model: nn.Module) -> None:
        """One clear error (at validation) for a model without a norm layer that keeps moving averages."""
        if not weighable_layers(model):
            raise ValueError("example_weighing needs norm layers with moving averages (batchnorm, ghost_batchnorm, "
                             "batch_group_norm, group_norm, layer_norm, instance_norm, batch_renorm); the model has none")

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        m = ctx.model
        self.check_model(m.module)
        with example_weighing(m.module, self.alpha):
            values = loss_and_score(m.forward, m.module, split, ctx.loss_fn, ctx.classification, ctx.batch_size,
                                    ctx.transforms)
        return Evaluation({f"weighed_{k}": v for k, v in values.items()})


def hard_labels(y: torch.Tensor) -> np.ndarray:
    """Class indices int64 [N]: the labels themselves, or the arg-max of soft labels."""
    return (y.argmax(dim=-1) if y.is_floating_point() else y).cpu().numpy().astype(np.int64)


def stored_labels(split_name: str, split: Split, epoch: int) -> dict[str, tuple[str, bytes]]:
    """The split's class labels as the artifact stored beside any logits (the same file for every evaluator)."""
    return {labels_name(split_name, epoch): (LABELS_KIND, save_npy(hard_labels(split.y)))}


@EVALUATORS.register("predictions")
class Predictions(Evaluator):
    """The per-example outputs (logits) of a split as float32 (N × classes), and its class labels, as artifacts.

    The labels (int64 [N], classification only) make the stored logits self-contained: accuracy, loss and
    ensembles of stored runs are computed from the artifacts alone (``ablab.analysis.variability``).
    """

    stores_predictions = True

    def __init__(self, splits: Optional[list[SplitName]] = ["test"], epochs: Epochs = "last"):  # noqa: B006
        super().__init__(splits, epochs)

    def directions(self, classification: bool) -> dict[str, str]:
        return {}

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        m = ctx.model
        logits = outputs(m.forward, m.module, split, ctx.batch_size, ctx.transforms).cpu().numpy().astype(np.float32)
        stored = {predictions_name(split_name, epoch): (PREDICTIONS_KIND, save_npy(logits))}
        if ctx.classification:
            stored.update(stored_labels(split_name, split, epoch))
        return Evaluation(artifacts=stored)


@EVALUATORS.register("activations")
class Activations(Evaluator):
    """Chosen layers' outputs on the first 'examples' examples of a split, flattened per example (float32 .npz).

    For representation similarity across runs (linear CKA, seed 002 Fig. 5.1): eval mode, split order,
    one array [examples, features] per layer named as in ``model.named_modules()``.
    """

    def __init__(self, layers: list[str], examples: PositiveInt = 500,
                 splits: Optional[list[SplitName]] = ["test"], epochs: Epochs = "last"):  # noqa: B006
        super().__init__(splits, epochs)
        if not layers:
            raise ValueError("activations needs at least one layer name (model.named_modules())")
        self.layers, self.examples = list(layers), examples

    def directions(self, classification: bool) -> dict[str, str]:
        return {}

    def check_model(self, model: nn.Module) -> None:
        """One clear error (at validation) for a layer name the model lacks."""
        modules = dict(model.named_modules())
        unknown = [name for name in self.layers if name not in modules]
        if unknown:
            raise ValueError(f"activations: no layer {', '.join(map(repr, unknown))} in the model; it has: "
                             f"{', '.join(n for n in modules if n)}")

    def stored_bytes(self, sizing: Sizing) -> int:
        """The chosen layers' float32 features on ``examples`` inputs (uncompressed: an upper bound of the .npz)."""
        features = layer_features(sizing.build_model(), self.layers, sizing.in_shape)
        return 4 * min(self.examples, sizing.examples) * sum(features.values()) + 512 * (len(self.layers) + 1)

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        m = ctx.model
        self.check_model(m.module)
        modules = dict(m.module.named_modules())
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        hooks = [modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out.detach().flatten(1).float().cpu()))
            for name in self.layers]
        try:
            outputs(m.forward, m.module, _First(split, self.examples), ctx.batch_size, ctx.transforms)
        finally:
            for hook in hooks:
                hook.remove()
        arrays = {name: torch.cat(parts).numpy() for name, parts in captured.items()}
        meta = {"layers": self.layers, "examples": min(self.examples, len(split))}
        return Evaluation(artifacts={activations_name(split_name, epoch): (ACTIVATIONS_KIND, save_npz(arrays, meta))})


def layer_features(model: Optional[nn.Module], layers: list[str], in_shape: tuple[int, ...]) -> dict[str, int]:
    """Features per example of each named layer's output, from one eval-mode forward pass on the meta device."""
    if model is None or not in_shape:
        return {}
    modules = dict(model.named_modules())
    found: dict[str, int] = {}
    def hook(name: str):
        def record(_m, _i, out) -> None:
            found[name] = out[0].numel()
        return record

    hooks = [modules[name].register_forward_hook(hook(name)) for name in layers if name in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.empty((2, *in_shape), device="meta"))
    except (RuntimeError, ValueError, NotImplementedError):  # a layer the meta device cannot run: not counted
        return {}
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


class _First:
    """The first ``k`` rows of a split, as ``batches`` reads a split."""

    def __init__(self, split: Split, k: int):
        self.split, self.k = split, min(k, len(split))

    def __len__(self) -> int:
        return self.k

    def rows(self, index: slice):
        return self.split.rows(slice(index.start, min(index.stop, self.k)))


@EVALUATORS.register("sharpness")
class SharpnessEvaluator(Evaluator):
    """SAM-sharpness and the top Hessian eigenvalue on the first training batches, in a fixed order."""

    def __init__(self, rho: PositiveFloat = 0.05, batches: PositiveInt = 8, hessian_iters: NonNegativeInt = 20,
                 splits: Optional[list[SplitName]] = ["train"], epochs: Epochs = "last"):  # noqa: B006
        super().__init__(splits, epochs)
        self.rho, self.n_batches, self.hessian_iters = rho, batches, hessian_iters

    def directions(self, classification: bool) -> dict[str, str]:
        return {"sam_sharpness": MIN, "hessian_top_eigenvalue": MIN}

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        from ablab.optim.sharpness import hessian_top_eigenvalue, sam_sharpness

        bs = ctx.train_batch_size
        chosen = [b for _, b in zip(range(min(self.n_batches, math.ceil(len(split) / bs))),
                                    batches(split, bs, ctx.transforms))]
        model = ctx.model.module
        out = {"sam_sharpness": sam_sharpness(model, ctx.loss_fn, chosen, self.rho)}
        if self.hessian_iters > 0:
            g = seeding.create_generator("sharpness", 0, split.x.device)
            out["hessian_top_eigenvalue"] = hessian_top_eigenvalue(model, ctx.loss_fn, chosen, iters=self.hessian_iters,
                                                                   generator=g)
        return Evaluation(out)


@EVALUATORS.register("ensemble")
class Ensemble(Evaluator):
    """Loss and accuracy of the members' averaged logits (an ensemble of a post-hoc group); those logits and the labels."""

    members = None
    stores_predictions = True

    def __init__(self, splits: Optional[list[SplitName]] = None, epochs: Epochs = "last"):
        super().__init__(splits, epochs)

    def directions(self, classification: bool) -> dict[str, str]:
        return {"ensemble_loss": MIN, "ensemble_accuracy": MAX}

    def check(self, data) -> None:
        if data.task != "classification":
            from ablab.errors import SpecError

            raise SpecError(f"the ensemble evaluator needs a classification task; dataset '{data.name}' is {data.task}",
                            field="name")

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        """Also stores the averaged logits as the unit's predictions: the ensemble is "one model" of
        the variability metrics (seed 002 Table 5.5)."""
        if not ctx.classification:
            raise ValueError("the ensemble evaluator needs a classification task")
        mean = torch.stack([outputs(m.forward, m.module, split, ctx.batch_size, ctx.transforms)
                            for m in ctx.members]).mean(0)
        y = split.y
        logits = save_npy(mean.cpu().numpy().astype(np.float32))
        return Evaluation({"ensemble_loss": ctx.loss_fn(mean, y).item(),
                           "ensemble_accuracy": correct(mean, y).item() / max(1, len(split))},
                          {predictions_name(split_name, epoch): (PREDICTIONS_KIND, logits),
                           **stored_labels(split_name, split, epoch)})


@EVALUATORS.register("disagreement")
class Disagreement(Evaluator):
    """Fraction of examples on which two members' predicted classes differ (mean over member pairs)."""

    members = None
    min_members = 2

    def __init__(self, splits: Optional[list[SplitName]] = None, epochs: Epochs = "last"):
        super().__init__(splits, epochs)

    def directions(self, classification: bool) -> dict[str, str]:
        return {"disagreement": MIN}

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        if len(ctx.members) < 2:
            raise ValueError("disagreement needs at least two models: use members: pairs or groups")
        preds = [outputs(m.forward, m.module, split, ctx.batch_size, ctx.transforms).argmax(-1) for m in ctx.members]
        fractions = [(preds[i] != preds[j]).double().mean().item()
                     for i in range(len(preds)) for j in range(i + 1, len(preds))]
        return Evaluation({"disagreement": float(np.mean(fractions))})
