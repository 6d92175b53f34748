"""The layers of a packed network: R replicas' layers fused into one, each giving the bits of the layer alone.

Two layouts carry the replicas' activations: *stacked* [R, B, …] between linear layers (batched matrix
products) and *channel-packed* [B, R·C, H, W] between convolutions, where replica r owns channels
r·C … r·C + C − 1. In the channel-packed layout a per-channel layer (BatchNorm's statistics, pooling,
ReLU, a residual sum) is one call over R·C channels whose every channel is computed as the replica's
own (measured bitwise on the CPU: ``tests/train/test_packed_conv.py``), and a convolution is one
grouped convolution (``groups=R``) wherever that gives the bits of R separate ones: oneDNN picks its
algorithm by shape, not by data, so ``ConvPlan`` compares the grouped and the separate calls once per
input shape on random data and, per part (output, input gradient, weight gradient, bias gradient),
takes the grouped one only where the two agree bitwise; elsewhere it calls the replica's own
convolution on its own contiguous slice (the run alone's kernel on the run alone's input).

``pack_model`` turns R identically built models into one packed network (``PackedNet``), a layer
at a time; ``check_model`` says why a model cannot be packed (``Unpackable``) without building it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ablab.models.resnets import BasicBlock, PadShortcut, PreActBlock, ResNet

EXACT_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Identity)  # the same bits on any slice of a batch
SLICED_ACTIVATIONS = (nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU)  # vectorised kernels differ at a tensor's tail
PER_CHANNEL = (nn.MaxPool2d, nn.AdaptiveAvgPool2d)  # each channel plane on its own: the same bits over R·C channels
CONTAINERS = (nn.Sequential, BasicBlock, PreActBlock, ResNet)  # their forward only composes their children


class Unpackable(Exception):
    """Why a run cannot be packed (one line)."""


# ---------------------------------------------------------------- linear layers (stacked layout)


class PackedLinear(torch.autograd.Function):
    """y_r = x_r W_rᵀ + b_r for every replica r, with the gradients the unpacked ``addmm`` computes.

    Autograd's own ``bmm`` backward takes W's gradient as (xᵀ g)ᵀ; ``addmm`` (an ``nn.Linear``) takes
    it as gᵀ x, which MKL rounds differently for small shapes; this backward takes gᵀ x per replica.
    Without a bias (a norm layer follows) the products are ``bmm``, as ``mm`` is alone.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1) if ctx.has_bias else None


class _Linear(nn.Module):
    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(_stack(layers, "weight"))
        self.bias = nn.Parameter(_stack(layers, "bias")) if layers[0].bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PackedLinear.apply(x, self.weight, self.bias)


def _stack(column: list[nn.Module], name: str) -> torch.Tensor:
    return torch.stack([getattr(m, name).detach() for m in column])


class _Sliced(nn.Module):
    """A layer applied to each replica's slice on its own (the bits of the unpacked call)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.module(xr) for xr in x.unbind(0)])


class _Dropout(nn.Module):
    """Inverted dropout per replica, each mask from that replica's ``stochastic`` generator (PyTorch's CPU
    ``dropout``: noise = bernoulli(1 − p) / (1 − p), output = x · noise)."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        super().__init__()
        self.p, self.generators = p, generators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        out = []
        for xr, g in zip(x.unbind(0), self.generators):
            noise = torch.empty_like(xr).bernoulli_(1 - self.p, generator=g)
            out.append(xr * noise.div_(1 - self.p))
        return torch.stack(out)


class _Flatten(nn.Module):
    """Flatten to the stacked layout: [R, B, …] → [R, B, F], or channel-packed [B, R·C, …] → [R, B, C·…]."""

    def __init__(self, channel_packed: bool, replicas: int):
        super().__init__()
        self.channel_packed, self.replicas = channel_packed, replicas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channel_packed:
            return x.flatten(2)
        return x.reshape(x.shape[0], self.replicas, -1).transpose(0, 1).contiguous()


# ---------------------------------------------------------------- convolutions (channel-packed layout)


@dataclass(frozen=True)
class ConvPlan:
    """Which parts of a packed convolution one grouped call computes bitwise as the replicas' own calls do."""

    output: bool
    grad_input: bool
    grad_weight: bool
    grad_bias: bool


_PLANS: dict[tuple, ConvPlan] = {}


def conv_plan(x_shape: tuple, w_shape: tuple, bias: bool, geometry: tuple, replicas: int, device: torch.device,
              dtype: torch.dtype) -> ConvPlan:
    """The plan for one input shape, measured once per process (the kernels chosen depend on shapes and
    threads, not on the data): grouped and separate calls compared on random data, part by part."""
    key = (x_shape, w_shape, bias, geometry, replicas, str(device), dtype, torch.get_num_threads())
    if key not in _PLANS:
        _PLANS[key] = _measure_plan(x_shape, w_shape, bias, geometry, replicas, device, dtype)
    return _PLANS[key]


def _measure_plan(x_shape: tuple, w_shape: tuple, bias: bool, geometry: tuple, replicas: int,
                  device: torch.device, dtype: torch.dtype) -> ConvPlan:
    g = torch.Generator().manual_seed(0)  # its own generator: no run's stream is drawn from
    x = torch.randn(x_shape, generator=g, dtype=dtype).to(device)
    w = torch.randn(w_shape, generator=g, dtype=dtype).to(device)
    b = torch.randn(w_shape[:2], generator=g, dtype=dtype).to(device) if bias else None
    y = _grouped_forward(x, w, b, geometry)
    up = torch.randn(y.shape, generator=g, dtype=dtype).to(device)
    own_y = _separate_forward(x, w, b, geometry)
    grouped = _grouped_backward(up, x, w, bias, geometry, (True, True, bias))
    own = _separate_backward(up, x, w, bias, geometry, (True, True, bias))
    same = [a is None or torch.equal(a, c) for a, c in zip(grouped, own)]
    return ConvPlan(torch.equal(y, own_y), *same)


def replica_part(x: torch.Tensor, r: int, replicas: int, channel_packed: bool) -> torch.Tensor:
    """Replica ``r``'s part of a packed activation: its channels (channel-packed) or its row (stacked)."""
    return _replica_slice(x, r, replicas) if channel_packed else x[r]


def _replica_slice(x: torch.Tensor, r: int, replicas: int) -> torch.Tensor:
    """Replica ``r``'s channels of a channel-packed tensor, contiguous (the run alone's input)."""
    c = x.shape[1] // replicas
    return x[:, r * c:(r + 1) * c].contiguous()


def _grouped_forward(x, w, b, geometry) -> torch.Tensor:
    stride, padding, dilation = geometry
    return F.conv2d(x, w.flatten(0, 1), None if b is None else b.flatten(), stride, padding, dilation, w.shape[0])


def _separate_forward(x, w, b, geometry) -> torch.Tensor:
    stride, padding, dilation = geometry
    return torch.cat([F.conv2d(_replica_slice(x, r, w.shape[0]), w[r], None if b is None else b[r], stride, padding,
                               dilation) for r in range(w.shape[0])], 1)


def _grouped_backward(g, x, w, bias: bool, geometry, mask) -> tuple:
    stride, padding, dilation = geometry
    r, o = w.shape[:2]
    gx, gw, gb = torch.ops.aten.convolution_backward(
        g, x, w.flatten(0, 1), [r * o] if bias else None, list(stride), list(padding), list(dilation), False,
        [0, 0], r, list(mask))
    return gx, None if gw is None else gw.view(w.shape), None if gb is None else gb.view(r, o)


def _separate_backward(g, x, w, bias: bool, geometry, mask) -> tuple:
    stride, padding, dilation = geometry
    replicas = w.shape[0]
    parts = [torch.ops.aten.convolution_backward(
        _replica_slice(g, r, replicas), _replica_slice(x, r, replicas), w[r], [w.shape[1]] if bias else None,
        list(stride), list(padding), list(dilation), False, [0, 0], 1, list(mask)) for r in range(replicas)]
    gx = torch.cat([p[0] for p in parts], 1) if mask[0] else None
    gw = torch.stack([p[1] for p in parts]) if mask[1] else None
    gb = torch.stack([p[2] for p in parts]) if mask[2] else None
    return gx, gw, gb


class PackedConv(torch.autograd.Function):
    """R convolutions (weights [R, O, C, k, k]) on a channel-packed input, each part grouped where the plan
    says it is bitwise the separate calls, separate elsewhere."""

    @staticmethod
    def forward(ctx, x, weight, bias, geometry, plan: ConvPlan):
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.plan, ctx.has_bias = geometry, plan, bias is not None
        return (_grouped_forward if plan.output else _separate_forward)(x, weight, bias, geometry)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        plan, grad = ctx.plan, grad.contiguous()
        wanted = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        grouped = tuple(w and ok for w, ok in zip(wanted, (plan.grad_input, plan.grad_weight, plan.grad_bias)))
        separate = tuple(w and not ok for w, ok in zip(wanted, grouped))
        out = [None, None, None]
        for mask, fn in ((grouped, _grouped_backward), (separate, _separate_backward)):
            if any(mask):
                for i, part in enumerate(fn(grad, x, weight, ctx.has_bias, ctx.geometry, mask)):
                    if mask[i]:
                        out[i] = part
        return out[0], out[1], out[2], None, None


class _Conv2d(nn.Module):
    def __init__(self, layers: list[nn.Conv2d]):
        super().__init__()
        first = layers[0]
        self.weight = nn.Parameter(_stack(layers, "weight"))
        self.bias = nn.Parameter(_stack(layers, "bias")) if first.bias is not None else None
        self.geometry = (tuple(first.stride), tuple(first.padding), tuple(first.dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = conv_plan(tuple(x.shape), tuple(self.weight.shape), self.bias is not None, self.geometry,
                         self.weight.shape[0], x.device, x.dtype)
        return PackedConv.apply(x, self.weight, self.bias, self.geometry, plan)


# ---------------------------------------------------------------- batch norm: per-replica statistics


class _BatchNorm(nn.Module):
    """R BatchNorms: each replica's γ, β, running mean and variance and batch count, [R, C] each.

    Channel-packed input: one ``batch_norm`` over R·C channels (a channel's statistics and output depend on
    that channel alone); stacked input [R, B, C]: one call per replica on its own slice (a 2-d batch norm
    vectorises over channels, so its rounding could depend on C)."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm], channel_packed: bool):
        super().__init__()
        first = layers[0]
        self.channel_packed, self.eps, self.momentum = channel_packed, first.eps, first.momentum
        self.weight = nn.Parameter(_stack(layers, "weight")) if first.weight is not None else None
        self.bias = nn.Parameter(_stack(layers, "bias")) if first.bias is not None else None
        self.register_buffer("fixed_gamma", _fixed(layers, "gamma", self.weight), persistent=False)
        self.register_buffer("fixed_beta", _fixed(layers, "beta", self.bias), persistent=False)
        self.register_buffer("running_mean", _stack(layers, "running_mean").clone())
        self.register_buffer("running_var", _stack(layers, "running_var").clone())
        self.register_buffer("num_batches_tracked", _stack(layers, "num_batches_tracked").clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.weight if self.weight is not None else self.fixed_gamma
        beta = self.bias if self.bias is not None else self.fixed_beta
        self.num_batches_tracked.add_(1)
        if self.channel_packed:
            return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1), _flat(gamma), _flat(beta),
                                True, self.momentum, self.eps)
        return torch.stack([F.batch_norm(x[r], self.running_mean[r], self.running_var[r], _row(gamma, r),
                                         _row(beta, r), True, self.momentum, self.eps) for r in range(x.shape[0])])


def _fixed(layers: list[nn.Module], name: str, learned: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """An ablated γ or β's constants (``AblatedBatchNorm``), stacked; None where it is learned or absent."""
    if learned is not None or getattr(layers[0], name, None) is None:
        return None
    return _stack(layers, name).clone()


def _flat(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.flatten()


def _row(t: Optional[torch.Tensor], r: int) -> Optional[torch.Tensor]:
    return None if t is None else t[r]


class _PadShortcut(nn.Module):
    """``PadShortcut`` on a channel-packed input: subsample, norm, then each replica's channels zero-padded."""

    def __init__(self, first: PadShortcut, norm: nn.Module, replicas: int):
        super().__init__()
        self.stride, self.extra, self.norm, self.replicas = first.stride, first.extra, norm, replicas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x[:, :, :: self.stride, :: self.stride])
        if not self.extra:
            return x
        b, rc, h, w = x.shape
        x = F.pad(x.reshape(b, self.replicas, rc // self.replicas, h, w), (0, 0, 0, 0, 0, self.extra))
        return x.reshape(b, -1, h, w)


# ---------------------------------------------------------------- the packed network


class PackedNet(nn.Module):
    """The packed network: input [R, B, …] stacked, output [R, B, out]; a convolutional body runs channel-packed."""

    def __init__(self, body: nn.Module, channel_packed: bool):
        super().__init__()
        self.body, self.channel_packed = body, channel_packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_packed:  # [R, B, C, H, W] → [B, R·C, H, W]
            x = x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
        return self.body(x)


@dataclass
class _Context:
    replicas: int
    device: torch.device
    generators: list
    channel_packed: bool = False  # a convolution came before (forward order = registration order in these models)


def pack_model(models: list[nn.Module], generators: list, device: torch.device) -> PackedNet:
    """The packed network of the replicas' identically built models (their layers stacked, their streams kept)."""
    ctx = _Context(len(models), device, generators)
    channel_packed = any(isinstance(m, nn.Conv2d) for m in models[0].modules())
    body = _convert(models, ctx)
    return PackedNet(body, channel_packed)


def check_model(model: nn.Module, device: torch.device) -> None:
    """``Unpackable`` saying why ``model`` (built on the meta device) cannot be packed; None when it can."""
    pack_model([model], [None], device)


def _convert(column: list[nn.Module], ctx: _Context) -> nn.Module:
    """The packed twin of one module of every replica: a layer fused, or a container with its children fused."""
    first = column[0]
    twin = _twin(column, ctx)
    if twin is not None:
        return twin
    if not isinstance(first, CONTAINERS):
        raise Unpackable(f"layer {type(first).__name__} is not packed")
    shell = copy.copy(first)  # the container's forward and settings; its children replaced below
    shell._modules = {name: None if child is None else _convert([m._modules[name] for m in column], ctx)
                      for name, child in first._modules.items()}
    shell._parameters, shell._buffers = {}, {}
    if any(True for _ in first.parameters(recurse=False)):
        raise Unpackable(f"{type(first).__name__} holds parameters of its own: not packed")
    return shell


def _twin(column: list[nn.Module], ctx: _Context) -> Optional[nn.Module]:
    """The fused layer for a leaf layer, None for a container; ``Unpackable`` for a layer that does not pack."""
    first = column[0]
    if isinstance(first, nn.Conv2d):
        _check_conv(first)
        ctx.channel_packed = True
        return _Conv2d(column)
    if isinstance(first, nn.Linear):
        return _Linear(column)
    if isinstance(first, nn.modules.batchnorm._BatchNorm):
        if not first.track_running_stats or first.momentum is None:
            raise Unpackable("a BatchNorm without running statistics or with a cumulative average is not packed")
        return _BatchNorm(column, ctx.channel_packed)
    if isinstance(first, nn.Flatten):
        if first.start_dim != 1 or first.end_dim != -1:
            raise Unpackable("a Flatten over other dimensions than all but the batch is not packed")
        channel_packed, ctx.channel_packed = ctx.channel_packed, False
        return _Flatten(channel_packed, ctx.replicas)
    if isinstance(first, PadShortcut):
        return _PadShortcut(first, _convert([m.norm for m in column], ctx), ctx.replicas)
    return _elementwise(first, ctx)


def _elementwise(first: nn.Module, ctx: _Context) -> Optional[nn.Module]:
    """Activations, dropout and per-channel pooling; None for a container."""
    if isinstance(first, nn.Dropout):
        if ctx.channel_packed:
            raise Unpackable("dropout in a convolutional model is not packed")
        if ctx.device.type != "cpu":
            raise Unpackable("dropout is packed on the CPU only (CUDA draws its masks in a fused kernel)")
        return _Dropout(first.p, ctx.generators)
    if isinstance(first, EXACT_ACTIVATIONS):
        twin = copy.deepcopy(first)
        twin.channel_packed = ctx.channel_packed  # where a probe finds each replica's part of its output
        return twin
    if isinstance(first, SLICED_ACTIVATIONS):
        if ctx.channel_packed:
            raise Unpackable(f"activation {type(first).__name__} in a convolutional model is not packed (its "
                             "vectorised kernel rounds by position in the tensor): relu, leaky_relu or identity pack")
        return _Sliced(first)
    if isinstance(first, PER_CHANNEL):
        if not ctx.channel_packed:
            raise Unpackable(f"layer {type(first).__name__} outside a convolutional body is not packed")
        return copy.deepcopy(first)
    return None


def _check_conv(m: nn.Conv2d) -> None:
    if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise Unpackable("a grouped, non-zero-padded or 'same'-padded convolution is not packed")


def multiply_adds(model: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, bool]:
    """Multiply-adds of one example's forward pass through the convolutions and linear layers (the model may be on
    the meta device: only shapes are used), and whether the model has a convolution."""
    total, conv = [0], [False]

    def count(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            conv[0] = True
            total[0] += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += out[0].numel() * m.in_features

    device = next(model.parameters()).device
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *in_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
    return total[0], conv[0]


def packed_parameters(net: PackedNet, model: nn.Module) -> list[nn.Parameter]:
    """The packed parameters in the order of a replica's ``parameters()`` (matched by name)."""
    mine = dict(net.body.named_parameters())
    return [mine[name] for name, _ in model.named_parameters()]


def unpack_buffers(net: PackedNet, r: int, model: nn.Module) -> None:
    """Replica ``r``'s slices of the packed buffers (BatchNorm's running statistics, batch count) into its model."""
    mine = dict(net.body.named_buffers())
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name in mine:
                buf.copy_(mine[name][r])
