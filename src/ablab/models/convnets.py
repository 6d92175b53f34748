"""Plain convolutional test problems: ``one_hidden_conv``, ``mnist_cnn``, DeepOBS ``3c3d`` and ``allcnnc``, ``vgg11``.

Every model is an ``nn.Sequential`` of named modules. Conv/linear layer ``i`` (0-based, forward
order, the index ``norm_at`` uses) is ``conv{i}`` or ``fc{i}``, followed by ``norm{i}`` where the
``NormPlan`` places one (that layer then has no bias) and ``act{i}``. Only standard ``nn.Conv2d``
and ``nn.Linear`` hold weights, so the engine's coupled L2 finds them all.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ablab.errors import SpecError
from ablab.models.layers import ActivationName, MaxPool2dSame, SamePad2d, create_activation
from ablab.norm import NormPlan, NormSpec, Placement
from ablab.registry import MODELS

# DeepOBS's coupled L2 coefficient λ per test problem: loss += 0.5·λ·Σ‖w‖² over conv/linear
# weights, biases and norm parameters excluded (Schneider et al. 2019, DeepOBS test problems).
DEEPOBS_L2: dict[str, float] = {"3c3d": 0.002, "allcnnc": 5e-4}

_Layers = OrderedDict[str, nn.Module]


def image_shape(in_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input; anything else is a ``SpecError``."""
    if len(in_shape) != 3:
        raise SpecError(f"model '{model}' needs image inputs of shape (C, H, W), got {tuple(in_shape)}")
    c, h, w = (int(s) for s in in_shape)
    return c, h, w


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def _check_size(model: str, in_shape: tuple[int, ...], *sizes: int) -> None:
    if min(sizes) < 1:
        raise SpecError(f"model '{model}' needs larger inputs: {tuple(in_shape)} shrinks to nothing")


def _norm_act(
    layers: _Layers, plan: NormPlan, i: int, features: int, dim: int, activation: str | None
) -> None:
    """Append ``norm{i}`` (where the plan places one) and ``act{i}`` after layer ``i``."""
    if plan.has_norm(i):
        layers[f"norm{i}"] = plan.make(i, features, dim=dim)
    if activation is not None:
        layers[f"act{i}"] = create_activation(activation)


def _init_(model: nn.Module, conv: str, linear: str, bias: float) -> None:
    """Xavier ('normal' | 'uniform') weights per layer type and constant biases."""
    init = {"normal": nn.init.xavier_normal_, "uniform": nn.init.xavier_uniform_}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init[conv if isinstance(m, nn.Conv2d) else linear](m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)


@MODELS.register("one_hidden_conv")
def one_hidden_conv(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    channels: int = 64,
    kernel_size: int = 5,
    stride: int = 2,
    norm: NormSpec = "none",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """One hidden conv layer: conv → norm → activation → flatten → linear.

    The "one hidden layer (convolutional)" model of Summers & Dinneen (2021), Table B.1; defaults
    follow their released code: 64 channels, 5×5, stride 2, padding k//2 (32×32 → 16×16×64),
    PyTorch's default initialization. Two layers for ``norm_at``: 0 = conv, 1 = linear.
    """
    c, h, w = image_shape(in_shape, "one_hidden_conv")
    for key, value in {"channels": channels, "kernel_size": kernel_size, "stride": stride}.items():
        if value < 1:
            raise SpecError(f"must be positive, got {value}", field=key)
    pad = kernel_size // 2
    oh, ow = ((n + 2 * pad - kernel_size) // stride + 1 for n in (h, w))
    _check_size("one_hidden_conv", in_shape, oh, ow)
    plan = NormPlan(norm, n_layers=2, placement=norm_at)
    layers: _Layers = OrderedDict()
    layers["conv0"] = nn.Conv2d(c, channels, kernel_size, stride, pad, bias=not plan.has_norm(0))
    _norm_act(layers, plan, 0, channels, 2, activation)
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(channels * oh * ow, out_dim, bias=not plan.has_norm(1))
    _norm_act(layers, plan, 1, out_dim, 1, None)
    return nn.Sequential(layers)


@MODELS.register("mnist_cnn")
def mnist_cnn(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    norm: NormSpec = "none",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """MNIST net of seed 002 §5.6: conv 32 → conv 64 (3×3) → max-pool 2 → linear 128 → linear, no dropout.

    Summers & Dinneen (2021): PyTorch's MNIST example without its dropout, no padding, PyTorch's
    default initialization. 28×28 → 26 → 24 → 12: 9216 features. Layers 0-3 for ``norm_at``.
    """
    c, h, w = image_shape(in_shape, "mnist_cnn")
    oh, ow = (h - 4) // 2, (w - 4) // 2
    _check_size("mnist_cnn", in_shape, oh, ow)
    plan = NormPlan(norm, n_layers=4, placement=norm_at)
    layers: _Layers = OrderedDict()
    layers["conv0"] = nn.Conv2d(c, 32, 3, bias=not plan.has_norm(0))
    _norm_act(layers, plan, 0, 32, 2, activation)
    layers["conv1"] = nn.Conv2d(32, 64, 3, bias=not plan.has_norm(1))
    _norm_act(layers, plan, 1, 64, 2, activation)
    layers["pool1"] = nn.MaxPool2d(2)
    layers["flatten"] = nn.Flatten()
    layers["fc2"] = nn.Linear(64 * oh * ow, 128, bias=not plan.has_norm(2))
    _norm_act(layers, plan, 2, 128, 1, activation)
    layers["fc3"] = nn.Linear(128, out_dim, bias=not plan.has_norm(3))
    _norm_act(layers, plan, 3, out_dim, 1, None)
    return nn.Sequential(layers)


@MODELS.register("3c3d")
def three_c_three_d(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    norm: NormSpec = "none",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """DeepOBS 3C3D: three conv + max-pool layers, then dense 512 → 256 → classes.

    Schneider et al. (2019): conv 5×5→64 valid, 3×3→96 valid, 3×3→128 same, each followed by a
    3×3/2 max-pool with TF 'SAME' padding (32 → 28 → 14 → 12 → 6 → 6 → 3); conv weights
    Xavier-normal, dense weights Xavier-uniform, biases 0. Layers for ``norm_at``: 0–2 conv,
    3–5 dense. DeepOBS adds coupled L2 ``DEEPOBS_L2['3c3d']``.
    """
    c, h, w = image_shape(in_shape, "3c3d")
    plan = NormPlan(norm, n_layers=6, placement=norm_at)
    layers: _Layers = OrderedDict()
    spec = [(c, 64, 5, 0), (64, 96, 3, 0), (96, 128, 3, 1)]  # (in, out, kernel, padding)
    for i, (cin, cout, k, pad) in enumerate(spec):
        layers[f"conv{i}"] = nn.Conv2d(cin, cout, k, padding=pad, bias=not plan.has_norm(i))
        _norm_act(layers, plan, i, cout, 2, activation)
        layers[f"pool{i}"] = MaxPool2dSame(3, 2)
        h, w = (_ceil_div(n + 2 * pad - k + 1, 2) for n in (h, w))  # conv, then 'SAME' pool /2
        _check_size("3c3d", in_shape, h, w)
    layers["flatten"] = nn.Flatten()
    sizes = [128 * h * w, 512, 256, out_dim]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=3):
        layers[f"fc{i}"] = nn.Linear(a, b, bias=not plan.has_norm(i))
        _norm_act(layers, plan, i, b, 1, activation if i < 5 else None)
    model = nn.Sequential(layers)
    _init_(model, conv="normal", linear="uniform", bias=0.0)
    return model


@MODELS.register("allcnnc")
def allcnnc(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    input_dropout: float = 0.2,
    dropout: float = 0.5,
    bias_init: float = 0.0,
    norm: NormSpec = "none",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """All-CNN-C as in DeepOBS: nine convs with strided convs instead of pooling, global average.

    Springenberg et al. (2015) via Schneider et al. (2019): dropout ``input_dropout`` on the input;
    3×3→96 ×2, 3×3→96 stride 2; dropout; 3×3→192 ×2, 3×3→192 stride 2; dropout; 3×3→192 valid,
    1×1→192, 1×1→classes; activation after every conv (the last too); mean over space
    (32 → 16 → 8 → 6). 'SAME' convs pad like TF. Weights Xavier-normal; biases ``bias_init``
    (DeepOBS 0.1; the Dissecting-BatchNorm thesis 0, so β starts like the bias). Layers for
    ``norm_at``: the nine convs, 0–8. DeepOBS adds coupled L2 ``DEEPOBS_L2['allcnnc']``.
    """
    c, h, w = image_shape(in_shape, "allcnnc")
    for key, value in {"input_dropout": input_dropout, "dropout": dropout}.items():
        if not 0.0 <= value < 1.0:
            raise SpecError(f"must be in [0, 1), got {value}", field=key)
    h, w = (_ceil_div(_ceil_div(n, 2), 2) - 2 for n in (h, w))  # two stride-2 'SAME' convs, a valid 3×3
    _check_size("allcnnc", in_shape, h, w)
    plan = NormPlan(norm, n_layers=9, placement=norm_at)
    # (in, out, kernel, stride, padding): padding None = TF 'SAME' for a strided conv
    spec = [
        (c, 96, 3, 1, 1), (96, 96, 3, 1, 1), (96, 96, 3, 2, None),
        (96, 192, 3, 1, 1), (192, 192, 3, 1, 1), (192, 192, 3, 2, None),
        (192, 192, 3, 1, 0), (192, 192, 1, 1, 0), (192, out_dim, 1, 1, 0),
    ]
    layers: _Layers = OrderedDict()
    if input_dropout > 0:
        layers["drop_in"] = nn.Dropout(input_dropout)
    for i, (cin, cout, k, stride, pad) in enumerate(spec):
        if pad is None:
            layers[f"pad{i}"] = SamePad2d(k, stride)
        layers[f"conv{i}"] = nn.Conv2d(cin, cout, k, stride, pad or 0, bias=not plan.has_norm(i))
        _norm_act(layers, plan, i, cout, 2, activation)
        if i in (2, 5) and dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(dropout)
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    model = nn.Sequential(layers)
    _init_(model, conv="normal", linear="normal", bias=bias_init)
    return model


_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


@MODELS.register("vgg11")
def vgg11(
    in_shape: tuple[int, ...],
    out_dim: int,
    *,
    norm: NormSpec = "batchnorm",
    norm_at: Placement = "all_hidden",
    activation: ActivationName = "relu",
) -> nn.Module:
    """VGG-11 for 32×32 images: eight 3×3 convs in five max-pooled stages, then one linear layer.

    Simonyan & Zisserman (2015) config A, CIFAR-style as in the code of Summers & Dinneen (2021):
    64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M (M = 2×2 max-pool), conv → norm →
    activation, then linear 512·(H/32)·(W/32) → classes; PyTorch's default initialization. Defined
    with BatchNorm there, hence ``norm='batchnorm'``. Layers for ``norm_at``: convs 0–7, linear 8.
    Needs H, W ≥ 32.
    """
    c, h, w = image_shape(in_shape, "vgg11")
    plan = NormPlan(norm, n_layers=9, placement=norm_at)
    layers: _Layers = OrderedDict()
    i = 0
    for item in _VGG11:
        if item == "M":
            layers[f"pool{i - 1}"] = nn.MaxPool2d(2, 2)
            h, w = h // 2, w // 2
            continue
        layers[f"conv{i}"] = nn.Conv2d(c, item, 3, padding=1, bias=not plan.has_norm(i))
        _norm_act(layers, plan, i, item, 2, activation)
        c, i = item, i + 1
    _check_size("vgg11", in_shape, h, w)
    layers["flatten"] = nn.Flatten()
    layers["fc8"] = nn.Linear(c * h * w, out_dim, bias=not plan.has_norm(8))
    _norm_act(layers, plan, 8, out_dim, 1, None)
    return nn.Sequential(layers)
