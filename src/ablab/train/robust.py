"""Robustness evaluators (seed 002 ch. 3): accuracy under an attack, and logit statistics on clean and attacked inputs.

``robust`` attacks a fixed, seeded subsample of a split with one attack (``ATTACKS``) and records
``<label>_accuracy``, ``<label>_loss`` and ``<label>_clean_accuracy`` (the same subsample unattacked);
list it once per attack (FGSM, PGD-5/10/20 … in one run, seed 002 Tables 3.1/3.3/3.5/3.6).
``logit_stats`` records the variance and range of the logits, clean and under an attack, and their
histograms as an artifact (Fig. 3.1 left, Fig. 3.2 right).

The attack sees pixels in its ``bounds`` and the run's deterministic preprocessing (``normalize``) inside:
``model(normalize(x_adv))`` (``ablab.train.attacks``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
import torch
from pydantic import AfterValidator, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import nn

from ablab import seeding
from ablab.artifacts import save_npz
from ablab.data.base import Split
from ablab.errors import SpecError
from ablab.registry import ATTACKS, EVALUATORS
from ablab.train.attacks import Attack, attack_generator, preprocessed
from ablab.train.evaluators import MAX, MIN, EvalContext, Evaluation, Epochs, Evaluator, SplitName, correct

LOGIT_HISTOGRAM_KIND = "logit_histogram"  # counts of logit values in fixed bins, clean and attacked (logit_stats)
SUBSAMPLE_STREAM = "robust_subsample"  # the seed stream of the subsample (the same for every attack of one seed)


def _validate_attack(spec: Union[str, dict[str, Any]]) -> dict[str, Any]:
    """An attack component spec, checked and completed (every default written out, so the run id names it)."""
    try:
        spec = ATTACKS.validate(spec)
        ATTACKS.create(spec)
    except SpecError as err:
        raise ValueError(err.render()) from None
    return spec


AttackSpec = Annotated[Union[str, dict[str, Any]], AfterValidator(_validate_attack)]
"""An attack in a spec: a registered name, or a mapping with ``name`` and its parameters."""


def attack_label(spec: dict[str, Any]) -> str:
    """The default metric prefix of an attack: ``fgsm``, ``pgd20``, ``spsa``."""
    return f"pgd{spec['steps']}" if spec["name"] == "pgd" else spec["name"]


def subsample(n: int, examples: Optional[int], seed: int) -> torch.Tensor:
    """Indices (sorted, int64, CPU) of the fixed subsample: all ``n`` rows, or ``examples`` drawn without replacement."""
    if examples is None:
        return torch.arange(n)
    if examples > n:
        raise ValueError(f"the subsample of {examples} examples is larger than the split ({n} examples)")
    order = torch.randperm(n, generator=seeding.create_generator(SUBSAMPLE_STREAM, seed))
    return order[:examples].sort().values


def _check_task_and_splits(ev: Evaluator, data, examples: Optional[int], bounds: tuple[float, float]) -> None:
    """SpecError unless the task is classification, each split holds the subsample and its pixels lie in ``bounds``."""
    name = type(ev).registered
    if data.task != "classification":
        raise SpecError(f"{name} attacks a classifier; dataset '{data.name}' is {data.task}", field="name")
    for key in ev.splits if ev.splits is not None else list(data.splits):
        split = data.splits.get(key)
        if split is None:
            continue
        if examples is not None and examples > len(split):
            raise SpecError(f"{name}: the subsample of {examples} examples is larger than split '{key}' "
                            f"({len(split)} examples); lower 'examples'", field="examples")
        x = split.x
        if x.dtype != torch.uint8 and x.numel():  # uint8 codes decode to [0, 1]
            lo, hi = float(x.min()), float(x.max())
            if lo < bounds[0] or hi > bounds[1]:
                raise SpecError(f"{name}: split '{key}' of dataset '{data.name}' has values in [{lo:.4g}, {hi:.4g}], "
                                f"outside the attack's bounds [{bounds[0]}, {bounds[1]}]: ε is in pixel units of "
                                "images in those bounds (normalize with the 'normalize' augmentation, or set bounds)",
                                field="attack.bounds" if getattr(ev, "attack_spec", None) else "name")


class _Attacked(Evaluator):
    """Shared by the attack evaluators: the attack, the subsample and its seed."""

    registered = ""

    def __init__(self, attack: Optional[dict], examples: Optional[int], seed: int, splits, epochs: Epochs):
        super().__init__(splits, epochs)
        self.attack_spec = attack
        self.attack: Optional[Attack] = ATTACKS.create(attack) if attack is not None else None
        self.examples, self.seed = examples, seed

    def check(self, data) -> None:
        bounds = self.attack.bounds if self.attack is not None else (-float("inf"), float("inf"))
        _check_task_and_splits(self, data, self.examples, bounds)

    def attacked_batches(self, ctx: EvalContext, split: Split):
        """(clean x, y, attacked x or None) over the subsample in order, in evaluation batches (the last may be short)."""
        index = subsample(len(split), self.examples, self.seed).to(split.x.device)
        generator = attack_generator(self.seed, split.x.device)
        m = ctx.model
        for start in range(0, len(index), ctx.batch_size):
            x, y = split.rows(index[start:start + ctx.batch_size])
            x_adv = None
            if self.attack is not None:
                x_adv = self.attack(m.module, x, y, transforms=ctx.transforms, forward=m.forward, generator=generator)
            yield x, y, x_adv


@torch.no_grad()
def _eval_outputs(ctx: EvalContext, y: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    """The model's outputs (eval mode, after the preprocessing) for each of ``xs``."""
    m = ctx.model
    was_training = m.module.training
    m.module.eval()
    call = preprocessed(m.forward, ctx.transforms, y)
    out = [call(x) for x in xs]
    m.module.train(was_training)
    return out


@EVALUATORS.register("robust")
class Robust(_Attacked):
    """Accuracy and loss under an attack on a fixed, seeded subsample of a split (seed 002 Tables 3.1–3.6).

    ``examples``: the subsample's size (None: the whole split; the seed used 1,000 test images for
    PGD-1000 and SPSA); ``seed``: the subsample's and the attack's random stream; ``label``: the metric
    prefix (default ``fgsm``, ``pgd<steps>``, ``spsa``). The loss is the run's loss on the attacked inputs.
    """

    registered = "robust"

    def __init__(self, attack: AttackSpec = "pgd", examples: Optional[PositiveInt] = None, seed: NonNegativeInt = 0,
                 label: Optional[str] = None, splits: Optional[list[SplitName]] = ["test"],  # noqa: B006
                 epochs: Epochs = "last"):
        super().__init__(_validate_attack(attack), examples, seed, splits, epochs)
        self.label = label or attack_label(self.attack_spec)
        if not self.label.replace("_", "").isalnum():
            raise ValueError(f"robust: label must be letters, digits and '_', got {self.label!r}")

    def directions(self, classification: bool) -> dict[str, str]:
        return {f"{self.label}_accuracy": MAX, f"{self.label}_loss": MIN, f"{self.label}_clean_accuracy": MAX}

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        if not ctx.classification:
            raise ValueError("robust attacks a classifier; this task is a regression")
        device = split.x.device
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        hits = torch.zeros((), device=device, dtype=torch.int64)
        clean_hits = torch.zeros((), device=device, dtype=torch.int64)
        n = 0
        for x, y, x_adv in self.attacked_batches(ctx, split):
            out_adv, out = _eval_outputs(ctx, y, x_adv, x)
            loss_sum += ctx.loss_fn(out_adv, y).double() * len(x)
            hits += correct(out_adv, y)
            clean_hits += correct(out, y)
            n += len(x)
        if n == 0:
            return Evaluation()
        return Evaluation({f"{self.label}_accuracy": hits.item() / n, f"{self.label}_loss": (loss_sum / n).item(),
                           f"{self.label}_clean_accuracy": clean_hits.item() / n})


def logit_histogram_name(split: str, epoch: int) -> str:
    """The artifact name of ``logit_stats``' histograms (.npz: edges, clean, attacked)."""
    return f"logit_histogram_{split}_e{epoch:04d}.npz"


@EVALUATORS.register("logit_stats")
class LogitStats(_Attacked):
    """Variance and range of the logits on clean and attacked inputs, and their histograms (seed 002 Fig. 3.1–3.2).

    Variance: of every logit value of the subsample (examples × classes, population, ddof 0; seed 002
    Fig. 3.1: 8.31 PGD-trained vs 4.02 ALP); range: max − min of those values (Fig. 3.2: ≈20 vs ≈1.2 with
    label smoothing). ``attack`` None: clean only. Histograms: ``bins`` equal bins over ``[-limit, limit]``
    (values beyond count in the end bins), stored as ``logit_histogram_<split>_e<epoch>.npz``.
    """

    registered = "logit_stats"

    def __init__(self, attack: Optional[AttackSpec] = "pgd", examples: Optional[PositiveInt] = None,
                 seed: NonNegativeInt = 0, bins: PositiveInt = 100, limit: float = 30.0,
                 splits: Optional[list[SplitName]] = ["test"], epochs: Epochs = "last"):  # noqa: B006
        super().__init__(_validate_attack(attack) if attack is not None else None, examples, seed, splits, epochs)
        if not limit > 0:
            raise ValueError(f"logit_stats: limit must be positive, got {limit}")
        self.bins, self.limit = bins, limit

    def directions(self, classification: bool) -> dict[str, str]:
        names = ["logit_variance", "logit_range"] + (["adv_logit_variance", "adv_logit_range"] if self.attack else [])
        return {n: MIN for n in names}

    def stored_bytes(self, sizing) -> int:
        return 8 * (3 * self.bins + 1) + 1024

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        clean, adv, rows = [], [], 0
        for x, y, x_adv in self.attacked_batches(ctx, split):
            rows += len(x)
            outs = _eval_outputs(ctx, y, x, *([x_adv] if x_adv is not None else []))
            clean.append(outs[0].double().flatten())
            if x_adv is not None:
                adv.append(outs[1].double().flatten())
        if not clean:
            return Evaluation()
        edges = np.linspace(-self.limit, self.limit, self.bins + 1)
        metrics, arrays = {}, {"edges": edges}
        for prefix, parts in (("", clean), ("adv_", adv)):
            if not parts:
                continue
            values = torch.cat(parts)
            metrics[f"{prefix}logit_variance"] = values.var(unbiased=False).item()
            metrics[f"{prefix}logit_range"] = (values.max() - values.min()).item()
            arrays["attacked" if prefix else "clean"] = histogram(values.cpu().numpy(), edges)
        meta = {"attack": self.attack_spec, "examples": rows}
        return Evaluation(metrics, {logit_histogram_name(split_name, epoch): (LOGIT_HISTOGRAM_KIND,
                                                                               save_npz(arrays, meta))})


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts (int64) of ``values`` in the bins of ``edges``, values beyond the ends counted in the end bins."""
    return np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0].astype(np.int64)


class _Pixels(nn.Module):
    """The model as the attack libraries expect it: pixels in, logits out (preprocessing inside)."""

    def __init__(self, module: nn.Module, forward, transforms: tuple):
        super().__init__()
        self.module, self.call, self.transforms = module, forward, transforms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x, _ = transform(x, None, None)
        return self.call(x)


def require_torchattacks():
    """The ``torchattacks`` module, or a SpecError saying how to install it."""
    try:
        import torchattacks
    except ImportError:
        raise SpecError("the autoattack evaluator runs torchattacks, which is not installed: "
                        "pip install 'ablab[robust]' (or torchattacks --no-deps)", field="name") from None
    return torchattacks


@EVALUATORS.register("autoattack")
class AutoAttackEval(_Attacked):
    """Accuracy under AutoAttack (Croce & Hein 2020) through torchattacks, on a fixed, seeded subsample.

    The robust-accuracy standard today (APGD-CE, APGD-T, FAB-T, Square for ``standard``); an extra,
    ``pip install 'ablab[robust]'``. ε in pixel units of the [0, 1] image (default .03, seed 002 §3.5.1),
    eval mode, the run's ``normalize`` inside the model. Records ``autoattack_accuracy`` (and
    ``autoattack_clean_accuracy``).
    """

    registered = "autoattack"

    def __init__(self, eps: NonNegativeFloat = 0.03, norm: Literal["Linf", "L2"] = "Linf",
                 version: Literal["standard", "plus", "rand"] = "standard", examples: Optional[PositiveInt] = None,
                 seed: NonNegativeInt = 0, splits: Optional[list[SplitName]] = ["test"],  # noqa: B006
                 epochs: Epochs = "last"):
        super().__init__(None, examples, seed, splits, epochs)
        self.eps, self.norm, self.version = eps, norm, version

    def check(self, data) -> None:
        require_torchattacks()
        _check_task_and_splits(self, data, self.examples, (0.0, 1.0))
        if self.version != "rand" and data.out_dim < 4:  # the targeted DLR loss reads the 4th-largest logit
            raise SpecError(f"autoattack '{self.version}' needs 4 or more classes (its targeted DLR loss); dataset "
                            f"'{data.name}' has {data.out_dim}: use version 'rand'", field="version")

    def directions(self, classification: bool) -> dict[str, str]:
        return {"autoattack_accuracy": MAX, "autoattack_clean_accuracy": MAX}

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        ta = require_torchattacks()
        m = ctx.model
        model = _Pixels(m.module, m.forward, ctx.transforms)
        hits = clean_hits = n = 0
        devices = [split.x.device.index or 0] if split.x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # torchattacks seeds the global generators
            for x, y, _ in self.attacked_batches(ctx, split):
                (out,) = _eval_outputs(ctx, y, x)
                attack = ta.AutoAttack(model, norm=self.norm, eps=self.eps, version=self.version,
                                       n_classes=out.shape[-1], seed=self.seed)
                x_adv = attack(x, y)
                (out_adv,) = _eval_outputs(ctx, y, x_adv)
                hits += int(correct(out_adv, y))
                clean_hits += int(correct(out, y))
                n += len(x)
        if n == 0:
            return Evaluation()
        return Evaluation({"autoattack_accuracy": hits / n, "autoattack_clean_accuracy": clean_hits / n})


@EVALUATORS.register("transfer")
class Transfer(_Attacked):
    """Black-box transfer (seed 002 Tables 3.2/3.4): the first model (source) crafts the attack, the second (target) is scored.

    For a post-hoc study with ``members: pairs`` (every ordered pair of stored runs): ``transfer_accuracy``
    is the target's accuracy on the source's adversarial examples of the subsample, PGD-10 with the seed's
    CIFAR settings by default (§3.5.1); also the source's own (white-box) and the target's clean accuracy.
    The report draws them as a matrix, rows = target, columns = source; a pair of two runs of one variant
    is its diagonal (two independently trained models of one method).
    """

    registered = "transfer"
    members = 2
    min_members = 2

    def __init__(self, attack: AttackSpec = {"name": "pgd", "steps": 10},  # noqa: B006
                 examples: Optional[PositiveInt] = None, seed: NonNegativeInt = 0,
                 splits: Optional[list[SplitName]] = ["test"], epochs: Epochs = "last"):  # noqa: B006
        super().__init__(_validate_attack(attack), examples, seed, splits, epochs)

    def directions(self, classification: bool) -> dict[str, str]:
        return {"transfer_accuracy": MAX, "transfer_source_accuracy": MAX, "transfer_clean_accuracy": MAX}

    def evaluate(self, ctx: EvalContext, split_name: str, split: Split, epoch: int) -> Evaluation:
        if len(ctx.members) != 2:
            raise ValueError(f"transfer needs a (source, target) pair of models; got {len(ctx.members)}")
        source, target = ctx.members
        hits = {"transfer_accuracy": 0, "transfer_source_accuracy": 0, "transfer_clean_accuracy": 0}
        n = 0
        for x, y, x_adv in self.attacked_batches(ctx, split):  # attacked_batches attacks ctx.model: the source
            for key, view, inputs in (("transfer_accuracy", target, x_adv), ("transfer_source_accuracy", source, x_adv),
                                      ("transfer_clean_accuracy", target, x)):
                (out,) = _eval_outputs(_member(ctx, view), y, inputs)
                hits[key] += int(correct(out, y))
            n += len(x)
        return Evaluation({k: v / n for k, v in hits.items()}) if n else Evaluation()


def _member(ctx: EvalContext, view) -> EvalContext:
    """``ctx`` with ``view`` as its (first) model."""
    return replace(ctx, members=[view])
