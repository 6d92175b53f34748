"""Residual networks for small images: the ResNet-6/10/14/18 family and pre-activation ResNet-18.

Layer indices for ``norm_at`` (0-based, forward order): 0 = stem conv, then the two 3×3 convs of
each block, last = the linear classifier; ``n_layers`` = the depth in the name. A norm gets the
index of the layer whose output it reads: in a post-activation block that is the conv just
before it; in a pre-activation block the first norm reads the residual stream, which the
previous block's second conv (or the stem) last wrote. A conv whose output is normalized has no
bias. Shortcut convs are not counted; shortcuts are described with each block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablab.models.convnets import image_shape
from ablab.models.layers import ActivationName, create_activation
from ablab.norm import NormPlan, NormSpec, Placement
from ablab.registry import MODELS


def _conv3x3(cin: int, cout: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)


class PadShortcut(nn.Module):
    """Parameter-free shortcut (He et al. 2016a, option A): subsample by ``stride``, norm, zero-pad channels.

    The norm (``nn.Identity`` for none) follows Summers & Dinneen's code, which puts a BatchNorm on
    the subsampled input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: nn.Module):
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x[:, :, :: self.stride, :: self.stride])
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """Post-activation basic block (He et al. 2016a): act(norm(conv(act(norm(conv(x))))) + shortcut(x)).

    Convs ``index`` and ``index + 1``; the shortcut's norm is present where conv ``index + 1``
    has one (the two are summed).
    """

    def __init__(self, cin: int, cout: int, stride: int, plan: NormPlan, index: int, activation: str):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, bias=not plan.has_norm(index))
        self.norm1 = plan.make(index, cout, dim=2)
        self.act1 = create_activation(activation)
        self.conv2 = _conv3x3(cout, cout, 1, bias=not plan.has_norm(index + 1))
        self.norm2 = plan.make(index + 1, cout, dim=2)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = PadShortcut(cin, cout, stride, plan.make(index + 1, cin, dim=2))
        self.act2 = create_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b): conv(act(norm(conv(act(norm(x)))))) + shortcut.

    Convs ``index`` and ``index + 1``; ``norm1`` has index ``index − 1`` (it reads the stream).
    Where the shape changes the shortcut is a 1×1 strided conv on act(norm(x)) without bias
    (projection, option B), otherwise the identity on x.
    """

    def __init__(self, cin: int, cout: int, stride: int, plan: NormPlan, index: int, activation: str):
        super().__init__()
        self.norm1 = plan.make(index - 1, cin, dim=2)
        self.act1 = create_activation(activation)
        self.conv1 = _conv3x3(cin, cout, stride, bias=not plan.has_norm(index))
        self.norm2 = plan.make(index, cout, dim=2)
        self.act2 = create_activation(activation)
        self.conv2 = _conv3x3(cout, cout, 1, bias=not plan.has_norm(index + 1))
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        return self.conv2(self.act2(self.norm2(self.conv1(out)))) + skip


class ResNet(nn.Module):
    """3×3 stem conv (no max-pool), stages of basic blocks (stride 2 from the second stage), mean, linear.

    ``preactivation``: pre-activation blocks with projection shortcuts, the stem conv un-normalized
    and, if ``final_norm``, norm → activation before the pooling; otherwise post-activation blocks
    with parameter-free shortcuts and stem conv → norm → activation. Conv weights He-normal
    (fan-out, as He et al.), linear PyTorch's default; ``zero_init_residual`` zeroes the trainable
    scale γ of the last norm of each post-activation branch (Goyal et al. 2017), so blocks start
    as act(shortcut(x)).
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_dim: int,
        *,
        stages: list[int],
        widths: list[int],
        preactivation: bool,
        norm: NormSpec,
        norm_at: Placement,
        activation: str,
        final_norm: bool = True,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        c, _, _ = image_shape(in_shape, "resnet")
        plan = NormPlan(norm, n_layers=2 + 2 * sum(stages), placement=norm_at)
        stem: list[nn.Module] = [_conv3x3(c, widths[0], 1, bias=not plan.has_norm(0))]
        if not preactivation:
            stem += [plan.make(0, widths[0], dim=2), create_activation(activation)]
        self.stem = nn.Sequential(*_drop_identity(stem))
        block = PreActBlock if preactivation else BasicBlock
        stage_list, index, cin = [], 1, widths[0]
        for s, (n_blocks, width) in enumerate(zip(stages, widths)):
            blocks = []
            for b in range(n_blocks):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(block(cin, width, stride, plan, index, activation))
                cin, index = width, index + 2
            stage_list.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_list)
        head: list[nn.Module] = []
        if preactivation and final_norm:
            head += [plan.make(index - 1, cin, dim=2), create_activation(activation)]
        head += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.head = nn.Sequential(*_drop_identity(head))
        self.fc = nn.Linear(cin, out_dim, bias=not plan.has_norm(index))
        self.fc_norm = plan.make(index, out_dim, dim=1)
        self._init_weights(zero_init_residual and not preactivation)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                gamma = getattr(m.norm2, "weight", None) if isinstance(m, BasicBlock) else None
                if isinstance(gamma, nn.Parameter) and gamma.requires_grad:
                    nn.init.zeros_(gamma)  # a frozen γ (an ablation) keeps its value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_norm(self.fc(self.head(self.stages(self.stem(x)))))


def _drop_identity(modules: list[nn.Module]) -> list[nn.Module]:
    return [m for m in modules if not isinstance(m, nn.Identity)]


# The family of Summers & Dinneen (2021, "Nondeterminism and Instability in Neural Network
# Optimization"; seed 002 ch. 5): "a 14-layer ResNet model [35]" ([35] = He et al. 2016a, the
# post-activation ResNet) with "a smaller 6-layer variant, larger 18-layer variant", and a ResNet-10
# in App. B.1. The text gives no widths; blocks and widths are those of the authors' released
# code (github.com/ceciliaresearch/nondeterminism_instability, resnet_cifar.py): stage blocks
# [2], [2,2], [2,2,2], [2,2,2,2] with 16, 16-32, 16-32-64, 64-128-256-512 channels, option-A
# shortcuts with a BatchNorm, last BN of each branch zero-initialized.


@MODELS.register("resnet6")
def resnet6(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    zero_init_residual: bool = True,
    preactivation: bool = False,
    norm: NormSpec = "batchnorm",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """ResNet-6 (Summers & Dinneen 2021): stem + one stage of 2 blocks (post-activation as the authors' code; preactivation: true for pre-activation), 16 channels."""
    return ResNet(in_shape, out_dim, stages=[2], widths=[16], preactivation=preactivation, norm=norm,
                  norm_at=norm_at, activation=activation, zero_init_residual=zero_init_residual)


@MODELS.register("resnet10")
def resnet10(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    zero_init_residual: bool = True,
    preactivation: bool = False,
    norm: NormSpec = "batchnorm",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """ResNet-10 (Summers & Dinneen 2021): 2 stages × 2 blocks (post-activation as the authors' code; preactivation: true for pre-activation), 16-32 channels."""
    return ResNet(in_shape, out_dim, stages=[2, 2], widths=[16, 32], preactivation=preactivation, norm=norm,
                  norm_at=norm_at, activation=activation, zero_init_residual=zero_init_residual)


@MODELS.register("resnet14")
def resnet14(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    zero_init_residual: bool = True,
    preactivation: bool = False,
    norm: NormSpec = "batchnorm",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """ResNet-14 (Summers & Dinneen 2021): 3 stages × 2 blocks (post-activation as the authors' code; preactivation: true for pre-activation), 16-32-64 channels."""
    return ResNet(in_shape, out_dim, stages=[2, 2, 2], widths=[16, 32, 64], preactivation=preactivation,
                  norm=norm, norm_at=norm_at, activation=activation,
                  zero_init_residual=zero_init_residual)


@MODELS.register("resnet18")
def resnet18(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    zero_init_residual: bool = True,
    preactivation: bool = False,
    norm: NormSpec = "batchnorm",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """ResNet-18 (Summers & Dinneen 2021): 4 stages × 2 blocks (post-activation as the authors' code; preactivation: true for pre-activation), 64-128-256-512."""
    return ResNet(in_shape, out_dim, stages=[2, 2, 2, 2], widths=[64, 128, 256, 512],
                  preactivation=preactivation, norm=norm, norm_at=norm_at, activation=activation,
                  zero_init_residual=zero_init_residual)


@MODELS.register("preact_resnet18")
def preact_resnet18(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    final_norm: bool = True,
    norm: NormSpec = "batchnorm",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """Pre-activation ResNet-18 (He et al. 2016b) for 32×32 images, as in the mixup papers.

    64-128-256-512 channels, 2 blocks per stage, 3×3 stem, no max-pool, 1×1 projection shortcuts.
    ``final_norm=False`` drops the norm → activation before the pooling, as the mixup code does.
    """
    return ResNet(in_shape, out_dim, stages=[2, 2, 2, 2], widths=[64, 128, 256, 512],
                  preactivation=True, norm=norm, norm_at=norm_at, activation=activation,
                  final_norm=final_norm)


@MODELS.register("resnet8")
def resnet8(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    zero_init_residual: bool = True,
    preactivation: bool = False,
    norm: NormSpec = "batchnorm",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """ResNet-8 (seed 002 §3.5.1, SVHN): 3 stages × 1 block, 16-32-64 channels (He et al.'s 6n + 2 with n = 1, this family's blocks)."""
    return ResNet(in_shape, out_dim, stages=[1, 1, 1], widths=[16, 32, 64], preactivation=preactivation,
                  norm=norm, norm_at=norm_at, activation=activation, zero_init_residual=zero_init_residual)
