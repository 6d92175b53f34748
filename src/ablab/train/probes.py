"""Probes: things recorded during training into a run's artifacts (registered in ``PROBES``).

A probe is built from the model before training; the loop calls ``before_step(step)`` and
``after_step(step, epoch)`` around every optimizer step (``step`` counts completed steps) and
``after_step`` once before the first (``(0, 0)``, or the restored step and epoch of a continued run). Values stay on the device until ``artifacts()``
copies them to the host once, at the end, so recording does not synchronise every k steps.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import PositiveInt
from torch import nn

from ablab.artifacts import NORM_PARAMS_FILE, OUTPUT_RANGE_FILE, RELU_SPARSITY_FILE, save_npz
from ablab.optim.groups import is_norm_module
from ablab.registry import PROBES


def is_norm_layer(module: nn.Module) -> bool:
    """A norm layer (``ablab.optim.groups.is_norm_module``, the one definition) with a per-feature scale and
    shift to record (ablated ones included); LocalResponseNorm, which has none, is left out."""
    return is_norm_module(module) and (
        hasattr(module, "gamma") or getattr(module, "weight", None) is not None or isinstance(module, nn.LayerNorm)
        or getattr(module, "num_features", None) is not None or getattr(module, "num_channels", None) is not None)


def gamma_beta(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The effective scale γ and shift β of a norm layer (1 and 0 where a parameter is ablated), flat."""
    if hasattr(module, "gamma") and hasattr(module, "beta"):
        return module.gamma.reshape(-1), module.beta.reshape(-1)
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    shape = _affine_shape(module, weight, bias)
    ref = next(module.parameters(), None)
    ref = ref if ref is not None else next(module.buffers(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    weight = weight if weight is not None else torch.ones(shape, device=device)
    bias = bias if bias is not None else torch.zeros(shape, device=device)
    return weight.reshape(-1), bias.reshape(-1)


def _affine_shape(module: nn.Module, weight, bias) -> tuple[int, ...]:
    """The shape γ and β have (or would have): per channel, or LayerNorm's normalized shape."""
    if weight is not None or bias is not None:
        return tuple((weight if weight is not None else bias).shape)
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape)
    return (getattr(module, "num_features", None) or module.num_channels,)


def learnable(module: nn.Module) -> dict[str, bool]:
    return {
        "gamma": bool(getattr(module, "learn_gamma", getattr(module, "weight", None) is not None)),
        "beta": bool(getattr(module, "learn_beta", getattr(module, "bias", None) is not None)),
    }


class NormParams:
    """γ and β of every norm layer every ``every_steps`` steps: ``layer/gamma`` arrays [T, C]."""

    artifact = NORM_PARAMS_FILE

    def __init__(self, model: nn.Module, every_steps: int):
        self.every = every_steps
        self.layers = [(name, m) for name, m in model.named_modules() if is_norm_layer(m)]
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []

    def before_step(self, step: int) -> None:
        pass

    def after_step(self, step: int, epoch: int) -> None:
        if step % self.every or not self.layers:
            return
        self.steps.append(step)
        with torch.no_grad():  # one concatenation per record: [γ_0, β_0, γ_1, β_1, …]
            self.values.append(torch.cat([t for _, m in self.layers for t in gamma_beta(m)]))

    def artifacts(self) -> dict[str, bytes]:
        if not self.layers:
            return {}
        series = torch.stack(self.values).float().cpu().numpy()  # [T, Σ 2·C_layer]
        arrays = {"steps": np.asarray(self.steps, dtype=np.int64)}
        meta = {"layers": []}
        start = 0
        for name, m in self.layers:
            c = gamma_beta(m)[0].numel()
            arrays[f"{name}/gamma"], arrays[f"{name}/beta"] = series[:, start : start + c], series[:, start + c : start + 2 * c]
            start += 2 * c
            meta["layers"].append({"name": name, "features": c, "type": type(m).__name__, "learnable": learnable(m)})
        return {self.artifact: save_npz(arrays, meta)}


class ReluSparsity:
    """Fraction of activations each ReLU zeroes on the training batch, every ``every_steps`` steps.

    sparsity[t, l] = #{a = 0} / #a over ReLU l's output on step t's batch: each step is divided
    by its own element count (a short last batch has fewer), NaN where the output holds a NaN
    (a diverged forward: the fraction is undefined) or the ReLU did not run in that step.
    Forward hooks are attached only for the step being recorded (a module with hooks takes
    PyTorch's slower call path); counts stay on the device until ``artifacts()``.
    """

    artifact = RELU_SPARSITY_FILE

    def __init__(self, model: nn.Module, every_steps: int):
        self.every = every_steps
        self.modules = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        self.names = [name for name, _ in self.modules]
        self.handles: list = []
        self.current: dict[str, tuple[torch.Tensor, int]] = {}  # name -> ([zeros, NaNs], elements)
        self.steps: list[int] = []
        self.records: list[dict[str, tuple[torch.Tensor, int]]] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if module.training and name not in self.current:  # a second call (SAM's second pass) is ignored
                counts = torch.stack([output.numel() - torch.count_nonzero(output), torch.isnan(output).sum()])
                self.current[name] = (counts, output.numel())
        return hook

    def before_step(self, step: int) -> None:
        if (step + 1) % self.every == 0:  # the step about to complete is a record step
            self.current = {}
            self.handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules]

    def after_step(self, step: int, epoch: int) -> None:
        if not self.handles:
            return
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.steps.append(step)
        self.records.append(self.current)
        self.current = {}

    def artifacts(self) -> dict[str, bytes]:
        if not self.names or not self.records:
            return {}
        cells = [(t, j, rec[n]) for t, rec in enumerate(self.records) for j, n in enumerate(self.names) if n in rec]
        sparsity = np.full((len(self.records), len(self.names)), np.nan)  # NaN where a ReLU did not run
        if cells:
            counts = torch.stack([c for _, _, (c, _) in cells]).cpu().numpy()  # one copy to the host
            for (t, j, (_, elements)), (zeros, nans) in zip(cells, counts):
                if nans == 0:
                    sparsity[t, j] = zeros / elements
        arrays = {"steps": np.asarray(self.steps, dtype=np.int64), "sparsity": sparsity.astype(np.float32)}
        return {self.artifact: save_npz(arrays, {"layers": self.names})}


def statistic_size(module: nn.Module, x: torch.Tensor) -> int:
    """B of the bound: how many elements enter one training statistic of the layer on input ``x``.

    Examples per group (the batch; a ghost or batch-group norm's ``examples``; GroupNorm's 1) ×
    channels per group (1; ``C/groups``) × positions H·W (seed 002, App. A: B = batch × H × W for conv).
    """
    n, c = x.shape[0], x.shape[1]
    positions = x[0, 0].numel()
    if isinstance(module, nn.GroupNorm):
        return (c // module.num_groups) * positions
    examples = getattr(module, "examples", None) or n
    groups = getattr(module, "groups", None) or c
    return examples * (c // groups) * positions


def normalized(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """x̂ = (y − β)/γ per channel (channel dim 1); NaN where γ = 0."""
    gamma, beta = gamma_beta(module)
    shape = (1, -1) + (1,) * (y.dim() - 2)
    gamma = gamma.detach().reshape(shape)
    return (y.detach() - beta.detach().reshape(shape)) / torch.where(gamma == 0, torch.nan, gamma)


class OutputRange:
    """The range of one norm layer's normalized output x̂ = (y − β)/γ in training and in evaluation.

    Training: min and max of x̂ over the training batch every ``every_steps`` steps, with the B of
    the bound |x̂| ≤ √(B − 1) (seed 002, Eq. 4.2, App. A). Evaluation: min and max of x̂ over every
    evaluation pass that follows a step (the run's ``eval_splits``; epoch 0: before training), where
    no such bound holds (Fig. A.1). One forward hook on the layer; values stay on the device.
    """

    artifact = OUTPUT_RANGE_FILE

    def __init__(self, model: nn.Module, layer: str, every_steps: int):
        self.every = every_steps
        self.name, self.module = _norm_layer(model, layer)
        self.recording = False
        self.step, self.epoch = 0, 0
        self.train: list[tuple[int, torch.Tensor, int]] = []  # (step, [min, max], B)
        self.eval: dict[tuple[int, int], torch.Tensor] = {}  # (step, epoch) -> [min, max]
        self.handle = self.module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if module.training and not self.recording:
            return
        with torch.no_grad():
            z = normalized(module, output)
            nan = z.isnan()  # a channel with γ = 0 (or a diverged output) is left out
            extremes = torch.stack([z.masked_fill(nan, float("inf")).amin(), z.masked_fill(nan, -float("inf")).amax()]).float()
        if module.training:  # the step's first training pass (SAM's second one is not recorded)
            self.train.append((self.step + 1, extremes, statistic_size(module, inputs[0])))
            self.recording = False
            return
        seen = self.eval.get((self.step, self.epoch))
        self.eval[(self.step, self.epoch)] = extremes if seen is None else torch.stack(
            [torch.minimum(seen[0], extremes[0]), torch.maximum(seen[1], extremes[1])])

    def before_step(self, step: int) -> None:
        self.step = step
        self.recording = (step + 1) % self.every == 0

    def after_step(self, step: int, epoch: int) -> None:
        self.recording = False
        self.step, self.epoch = step, epoch

    def artifacts(self) -> dict[str, bytes]:
        self.handle.remove()
        train = torch.stack([v for _, v, _ in self.train]).cpu().numpy() if self.train else np.zeros((0, 2))
        evals = torch.stack(list(self.eval.values())).cpu().numpy() if self.eval else np.zeros((0, 2))
        arrays = {
            "train_steps": np.asarray([s for s, _, _ in self.train], dtype=np.int64),
            "train_min": train[:, 0], "train_max": train[:, 1],
            "train_B": np.asarray([b for _, _, b in self.train], dtype=np.int64),
            "eval_steps": np.asarray([s for s, _ in self.eval], dtype=np.int64),
            "eval_epochs": np.asarray([e for _, e in self.eval], dtype=np.int64),
            "eval_min": evals[:, 0], "eval_max": evals[:, 1],
        }
        return {self.artifact: save_npz(arrays, {"layer": self.name, "type": type(self.module).__name__})}


def _norm_layer(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """The named norm layer ('' : the last one in the model), or a ValueError naming the choices."""
    layers = [(name, m) for name, m in model.named_modules() if is_norm_layer(m)]
    if not layers:
        raise ValueError("output_range: the model has no norm layer")
    if not layer:
        return layers[-1]
    found = dict(layers).get(layer)
    if found is None:
        raise ValueError(f"output_range: '{layer}' is not a norm layer of the model; its norm layers: "
                         f"{', '.join(n for n, _ in layers)}")
    return layer, found


@PROBES.register("norm_params")
def norm_params(model: nn.Module, every_steps: PositiveInt = 5) -> NormParams:
    """γ and β of every norm layer every k steps, with layer names and shapes (seed 001)."""
    return NormParams(model, every_steps)


@PROBES.register("relu_sparsity")
def relu_sparsity(model: nn.Module, every_steps: PositiveInt = 5) -> ReluSparsity:
    """Fraction of activations zeroed by each ReLU on the training batch, every k steps."""
    return ReluSparsity(model, every_steps)


@PROBES.register("output_range")
def output_range(model: nn.Module, layer: str = "", every_steps: PositiveInt = 1) -> OutputRange:
    """Range of one norm layer's output (y − β)/γ in training vs evaluation, with B of the bound √(B−1) (seed 002 Fig. A.1)."""
    return OutputRange(model, layer, every_steps)
