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

from ablab.artifacts import NORM_PARAMS_FILE, RELU_SPARSITY_FILE, save_npz
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


@PROBES.register("norm_params")
def norm_params(model: nn.Module, every_steps: PositiveInt = 5) -> NormParams:
    """γ and β of every norm layer every k steps, with layer names and shapes (seed 001)."""
    return NormParams(model, every_steps)


@PROBES.register("relu_sparsity")
def relu_sparsity(model: nn.Module, every_steps: PositiveInt = 5) -> ReluSparsity:
    """Fraction of activations zeroed by each ReLU on the training batch, every k steps."""
    return ReluSparsity(model, every_steps)
