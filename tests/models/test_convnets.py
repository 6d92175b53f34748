"""one_hidden_conv, DeepOBS 3c3d / allcnnc and vgg11: shapes, parameter counts, init, norm placement."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ablab.models  # noqa: F401  (registers the models)
from ablab.errors import SpecError
from ablab.models.convnets import DEEPOBS_L2
from ablab.models.layers import MaxPool2dSame, SamePad2d, same_padding
from ablab.registry import MODELS


def create(name: str, in_shape=(3, 32, 32), out_dim: int = 10, **params) -> nn.Module:
    return MODELS.create({"name": name, **params}, in_shape=in_shape, out_dim=out_dim)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def spatial_sizes(model: nn.Module, types: tuple[type, ...], in_shape=(3, 32, 32)) -> list[int]:
    """Heights of the outputs of the modules of ``types``, in forward order."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
        for m in model.modules()
        if isinstance(m, types)
    ]
    model.eval()(torch.zeros(1, *in_shape))
    for h in hooks:
        h.remove()
    return sizes


# --- parameter counts (exact, from the architectures; DeepOBS reports the same numbers) ---


@pytest.mark.parametrize(
    ("name", "out_dim", "expected"),
    [
        ("3c3d", 10, 895_210),  # 4,864 + 55,392 + 110,720 + 590,336 + 131,328 + 2,570
        ("3c3d", 100, 918_340),
        ("allcnnc", 100, 1_387_108),
        ("one_hidden_conv", 10, 168_714),  # 4,864 + 16·16·64·10 + 10
        ("vgg11", 10, 9_228_362),  # with BatchNorm, so convs have no bias
    ],
)
def test_parameter_counts(name, out_dim, expected):
    assert n_params(create(name, out_dim=out_dim)) == expected


def test_vgg11_without_norm_has_conv_biases():
    # each of the 2,752 normalized channels trades γ and β for one conv bias
    assert n_params(create("vgg11", norm="none")) == 9_228_362 - 2 * 2752 + 2752


# --- feature-map sizes ---


def test_3c3d_feature_map_sizes():
    model = create("3c3d")
    assert spatial_sizes(model, (nn.Conv2d, nn.MaxPool2d)) == [28, 14, 12, 6, 6, 3]
    assert model.fc3.in_features == 3 * 3 * 128


def test_allcnnc_feature_map_sizes():
    model = create("allcnnc", out_dim=100)
    assert spatial_sizes(model, (nn.Conv2d,)) == [32, 32, 16, 16, 16, 8, 6, 6, 6]
    assert create("allcnnc", in_shape=(1, 28, 28)).eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_one_hidden_conv_hidden_layer_is_16x16x64():
    model = create("one_hidden_conv")
    assert spatial_sizes(model, (nn.Conv2d,)) == [16]
    assert model.fc1.in_features == 16 * 16 * 64


def test_mnist_cnn_feature_map_sizes_and_no_dropout():
    model = create("mnist_cnn", in_shape=(1, 28, 28))
    assert spatial_sizes(model, (nn.Conv2d, nn.MaxPool2d), in_shape=(1, 28, 28)) == [26, 24, 12]
    assert model.fc2.in_features == 9216 and not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert n_params(model) == 1_199_882  # 320 + 18,496 + 9,216·128 + 128 + 1,290 (PyTorch's MNIST example)
    with pytest.raises(SpecError, match="mnist_cnn"):
        create("mnist_cnn", in_shape=(1, 5, 5))


def test_vgg11_feature_map_sizes_and_small_inputs_fail_early():
    assert spatial_sizes(create("vgg11"), (nn.MaxPool2d,)) == [16, 8, 4, 2, 1]
    with pytest.raises(SpecError, match="vgg11"):
        create("vgg11", in_shape=(1, 28, 28))


def test_non_image_input_is_a_spec_error():
    with pytest.raises(SpecError, match=r"\(C, H, W\)"):
        create("3c3d", in_shape=(64,))


# --- TensorFlow 'SAME' padding ---


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(32, 3, 2, (0, 1)), (28, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (6, 3, 2, (0, 1)), (5, 3, 1, (1, 1)),
     (4, 2, 2, (0, 0)), (1, 3, 2, (1, 1))],
)
def test_same_padding(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_same_max_pool_pads_bottom_right_only():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)  # x[r, c] = 4r + c
    # out = ceil(4/2) = 2, total padding 1, all of it after: windows rows/cols {0,1,2} and {2,3}
    assert MaxPool2dSame(3, 2)(x).flatten().tolist() == [10.0, 11.0, 14.0, 15.0]
    # PyTorch's symmetric padding would use windows {-1,0,1} and {1,2,3}
    assert nn.MaxPool2d(3, 2, padding=1)(x).flatten().tolist() == [5.0, 7.0, 13.0, 15.0]


def test_same_max_pool_padding_never_wins():
    x = -torch.arange(16.0).reshape(1, 1, 4, 4)  # negative: zero padding would win the max
    assert MaxPool2dSame(3, 2)(x).flatten().tolist() == [0.0, -2.0, -8.0, -10.0]


def test_same_strided_conv_pads_bottom_right():
    conv = nn.Conv2d(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 32, 32)
    expected = conv(nn.functional.pad(x, (0, 1, 0, 1)))
    assert torch.equal(conv(SamePad2d(3, 2)(x)), expected)
    assert expected.shape[-2:] == (16, 16)


# --- initialization ---


def test_3c3d_init_is_xavier_with_zero_biases():
    torch.manual_seed(0)
    model = create("3c3d")
    for layer in weight_layers(model):
        assert torch.count_nonzero(layer.bias) == 0
    fc = model.fc3  # Xavier-uniform: |w| ≤ √(6 / (fan_in + fan_out)), and the bound is reached
    bound = math.sqrt(6 / (1152 + 512))
    assert fc.weight.abs().max() <= bound
    assert fc.weight.abs().max() > 0.99 * bound
    conv = model.conv1  # Xavier-normal: std √(2 / (fan_in + fan_out)), fans include the 3×3
    std = math.sqrt(2 / (9 * 64 + 9 * 96))
    assert conv.weight.std().item() == pytest.approx(std, rel=0.02)


def test_allcnnc_bias_init_and_xavier_normal():
    torch.manual_seed(0)
    model = create("allcnnc", out_dim=100, bias_init=0.1)
    assert all(torch.all(layer.bias == 0.1) for layer in weight_layers(model))
    assert all(torch.all(layer.bias == 0.0) for layer in weight_layers(create("allcnnc")))
    std = math.sqrt(2 / (9 * 192 + 9 * 192))
    assert model.conv4.weight.std().item() == pytest.approx(std, rel=0.02)


def test_allcnnc_dropouts_are_parameters():
    probs = [m.p for m in create("allcnnc").modules() if isinstance(m, nn.Dropout)]
    assert probs == [0.2, 0.5, 0.5]
    model = create("allcnnc", input_dropout=0.0, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.train()(x), model.eval()(x))
    with pytest.raises(SpecError):
        create("allcnnc", dropout=1.0)


def test_deepobs_l2_documented():
    assert DEEPOBS_L2 == {"3c3d": 0.002, "allcnnc": 5e-4}
    assert set(DEEPOBS_L2) <= set(MODELS.list_names())


# --- norm placement ---


BN = nn.modules.batchnorm._BatchNorm


@pytest.mark.parametrize(
    ("name", "n_layers"), [("3c3d", 6), ("allcnnc", 9), ("vgg11", 9), ("one_hidden_conv", 2), ("mnist_cnn", 4)]
)
def test_batchnorm_replaces_the_bias_of_the_layer_before_it(name, n_layers):
    model = create(name, norm="batchnorm")
    layers = weight_layers(model)
    assert len(layers) == n_layers
    assert [layer.bias is None for layer in layers] == [True] * (n_layers - 1) + [False]
    norms = [m for m in model.modules() if isinstance(m, BN)]
    widths = [getattr(layer, "out_features", None) or layer.out_channels for layer in layers]
    assert [n.num_features for n in norms] == widths[:-1]


def test_norm_sits_between_layer_and_activation_at_chosen_indices():
    model = create("3c3d", norm="batchnorm", norm_at=[0, 5])
    names = [n for n, _ in model.named_children()]
    assert names.index("norm0") == names.index("conv0") + 1 == names.index("act0") - 1
    assert isinstance(model.norm5, nn.BatchNorm1d) and names[-1] == "norm5"
    biasless = [layer.bias is None for layer in weight_layers(model)]
    assert biasless == [True, False, False, False, False, True]


def test_norm_none_means_no_norm_layers_and_all_biases():
    model = create("allcnnc")
    assert not any(isinstance(m, BN) for m in model.modules())
    assert all(layer.bias is not None for layer in weight_layers(model))


@pytest.mark.parametrize(
    ("name", "bad"), [("3c3d", [6]), ("3c3d", [-7]), ("allcnnc", [9]), ("one_hidden_conv", [2])]
)
def test_norm_at_out_of_range_is_a_spec_error(name, bad):
    with pytest.raises(SpecError, match="out of range"):
        create(name, norm="batchnorm", norm_at=bad)


def test_activation_is_swappable_and_validated():
    model = create("3c3d", activation="tanh")
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 5
    with pytest.raises(SpecError, match="activation"):
        create("3c3d", activation="relu6")
