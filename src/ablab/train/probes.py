"""Probes: things recorded during training into a run's artifacts (registered in ``PROBES``).

A probe is built from the model before training; the loop calls ``before_step(step)`` and
``after_step(step, epoch)`` around every optimizer step (``step`` counts completed steps) and
``after_step(0, 0)`` once before the first. Values stay on the device until ``artifacts()``
copies them to the host once, at the end, so recording does not synchronise every k steps.
"""

from __future__ import annotations

import io
import json
from typing import Protocol

import numpy as np
import torch
from pydantic import PositiveInt
from torch import nn

from ablab.registry import PROBES


class Probe(Protocol):
    def before_step(self, step: int) -> None: ...

    def after_step(self, step: int, epoch: int) -> None: ...

    def artifacts(self) -> dict[str, bytes]: ...


def is_norm_layer(module: nn.Module) -> bool:
    """BatchNorm-like (running statistics), GroupNorm or LayerNorm modules."""
    return hasattr(module, "running_mean") or isinstance(module, (nn.GroupNorm, nn.LayerNorm))


def gamma_beta(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The effective scale γ and shift β of a norm layer (1 and 0 where a parameter is ablated)."""
    if hasattr(module, "gamma") and hasattr(module, "beta"):
        return module.gamma, module.beta
    n = getattr(module, "num_features", None) or getattr(module, "num_channels", None)
    ref = next(module.buffers(), None)
    weight = module.weight if getattr(module, "weight", None) is not None else torch.ones(n, device=ref.device)
    bias = module.bias if getattr(module, "bias", None) is not None else torch.zeros(n, device=ref.device)
    return weight, bias


def learnable(module: nn.Module) -> dict[str, bool]:
    return {
        "gamma": bool(getattr(module, "learn_gamma", getattr(module, "weight", None) is not None)),
        "beta": bool(getattr(module, "learn_beta", getattr(module, "bias", None) is not None)),
    }


def save_npz(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """Arrays plus a JSON ``meta`` entry in one ``.npz`` (read back with ``load_npz``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def load_npz(data: bytes | str) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(z["__meta__"].tobytes().decode()) if "__meta__" in z.files else {}
    return arrays, meta


class NormParams:
    """γ and β of every norm layer every ``every_steps`` steps: ``layer/gamma`` arrays [T, C]."""

    artifact = "probe_norm_params.npz"

    def __init__(self, model: nn.Module, every_steps: int):
        self.every = every_steps
        self.layers = [(name, m) for name, m in model.named_modules() if is_norm_layer(m)]
        self.steps: list[int] = []
        self.values: list[list[torch.Tensor]] = []

    def before_step(self, step: int) -> None:
        pass

    def after_step(self, step: int, epoch: int) -> None:
        if step % self.every or not self.layers:
            return
        self.steps.append(step)
        row = []
        for _, m in self.layers:
            g, b = gamma_beta(m)
            row.append(torch.stack([g.detach().float(), b.detach().float()]).clone())
        self.values.append(row)

    def artifacts(self) -> dict[str, bytes]:
        if not self.layers:
            return {}
        arrays = {"steps": np.asarray(self.steps, dtype=np.int64)}
        meta = {"layers": []}
        for i, (name, m) in enumerate(self.layers):
            series = torch.stack([row[i] for row in self.values]).cpu().numpy()  # [T, 2, C]
            arrays[f"{name}/gamma"], arrays[f"{name}/beta"] = series[:, 0], series[:, 1]
            meta["layers"].append({"name": name, "features": int(series.shape[-1]), "type": type(m).__name__,
                                   "learnable": learnable(m)})
        return {self.artifact: save_npz(arrays, meta)}


class ReluSparsity:
    """Fraction of activations each ReLU zeroes on the training batch, every ``every_steps`` steps."""

    artifact = "probe_relu_sparsity.npz"

    def __init__(self, model: nn.Module, every_steps: int):
        self.every = every_steps
        self.names = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
        self.armed = False
        self.current: dict[str, list[torch.Tensor]] = {}
        self.steps: list[int] = []
        self.values: list[torch.Tensor] = []
        for name, m in model.named_modules():
            if isinstance(m, nn.ReLU):
                m.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if self.armed and module.training:
                self.current.setdefault(name, []).append((output.detach() == 0).float().mean())
        return hook

    def before_step(self, step: int) -> None:
        self.armed = (step + 1) % self.every == 0  # the step about to complete is a record step
        self.current = {}

    def after_step(self, step: int, epoch: int) -> None:
        if not self.armed:
            return
        self.armed = False
        self.steps.append(step)
        # a module called twice in one step (SAM's second pass, reuse) counts its first call
        self.values.append(torch.stack([self.current[n][0] for n in self.names if n in self.current]))

    def artifacts(self) -> dict[str, bytes]:
        if not self.names or not self.values:
            return {}
        arrays = {"steps": np.asarray(self.steps, dtype=np.int64), "sparsity": torch.stack(self.values).cpu().numpy()}
        return {self.artifact: save_npz(arrays, {"layers": self.names})}


@PROBES.register("norm_params")
def norm_params(model: nn.Module, every_steps: PositiveInt = 5) -> NormParams:
    """γ and β of every norm layer every k steps, with layer names and shapes (seed 001)."""
    return NormParams(model, every_steps)


@PROBES.register("relu_sparsity")
def relu_sparsity(model: nn.Module, every_steps: PositiveInt = 5) -> ReluSparsity:
    """Fraction of activations zeroed by each ReLU on the training batch, every k steps."""
    return ReluSparsity(model, every_steps)
