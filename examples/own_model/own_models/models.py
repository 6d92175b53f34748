"""A residual MLP, registered as model ``res_mlp``: plain PyTorch plus one ablab decorator."""

from __future__ import annotations

import math

from torch import Tensor, nn

import ablab
from ablab.norm import NormPlan, NormSpec


class ResidualMLP(nn.Module):
    """x → linear → [x + f(norm(x))] × depth → linear, with f = linear → ReLU (He et al. 2016, pre-activation)."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, norm: NormSpec):
        super().__init__()
        plan = NormPlan(norm, n_layers=depth + 2, placement="all_hidden")  # one norm per block, none at the ends
        self.stem = nn.Linear(n_in, width)
        self.norms = nn.ModuleList(plan.make(i + 1, width, dim=1) if plan.has_norm(i + 1) else nn.Identity()
                                   for i in range(depth))
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(depth))
        self.head = nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x.flatten(1))
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(norm(h))
        return self.head(h)


@ablab.register_model("res_mlp")
def res_mlp(in_shape: tuple[int, ...], out_dim: int, width: int = 64, depth: int = 2,
            norm: NormSpec = "none") -> nn.Module:
    """Residual MLP: a linear stem, ``depth`` pre-norm residual blocks of ``width`` units, a linear head."""
    return ResidualMLP(math.prod(in_shape), out_dim, width, depth, norm)
