"""Fully connected test problems: ``linear`` and ``mlp``."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ablab.models.layers import ActivationName, create_activation, flat_size
from ablab.norm import NormPlan, NormSpec, Placement
from ablab.registry import MODELS


@MODELS.register("linear")
def linear(in_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    """Linear (logistic / least-squares) model on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(flat_size(in_shape), out_dim))


@MODELS.register("mlp")
def mlp(
    in_shape: tuple[int, ...],
    out_dim: int,
    widths: list[int] = [128, 128],
    activation: ActivationName = "relu",
    dropout: float = 0.0,
    norm: NormSpec = "none",
    norm_at: Placement = "all_hidden",
) -> nn.Module:
    """Multi-layer perceptron: [linear → norm → activation → dropout] per hidden width, then linear.

    Modules are named ``fc{i}``, ``norm{i}``, ``act{i}``, ``drop{i}`` by layer index ``i`` (the
    index ``norm_at`` uses).
    """
    if any(w <= 0 for w in widths):
        from ablab.errors import SpecError

        raise SpecError(f"widths must be positive, got {widths}", field="widths")
    sizes = [flat_size(in_shape), *widths, out_dim]
    plan = NormPlan(norm, n_layers=len(sizes) - 1, placement=norm_at)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers[f"fc{i}"] = nn.Linear(a, b, bias=not plan.has_norm(i))
        if plan.has_norm(i):
            layers[f"norm{i}"] = plan.make(i, b, dim=1)
        if i < len(sizes) - 2:
            layers[f"act{i}"] = create_activation(activation)
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
    return nn.Sequential(layers)
