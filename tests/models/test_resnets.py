"""ResNet-6/10/14/18 (Summers & Dinneen 2021) and pre-activation ResNet-18: structure and norm plan."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ablab.models  # noqa: F401  (registers the models)
from ablab.errors import SpecError
from ablab.models.resnets import BasicBlock, PadShortcut, PreActBlock
from ablab.registry import MODELS

BN = nn.modules.batchnorm._BatchNorm


def create(name: str, in_shape=(3, 32, 32), out_dim: int = 10, **params) -> nn.Module:
    return MODELS.create({"name": name, **params}, in_shape=in_shape, out_dim=out_dim)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def plan_layers(model: nn.Module) -> list[nn.Module]:
    """The layers ``norm_at`` counts: 3×3 convs and the linear classifier (not 1×1 shortcuts)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet6", 9_978),
        ("resnet10", 42_682),
        ("resnet14", 172_602),
        ("resnet18", 11_001_034),
        ("preact_resnet18", 11_172_170),
    ],
)
def test_parameter_counts_for_10_classes(name, expected):
    assert n_params(create(name)) == expected


def test_preact_resnet18_without_final_norm_matches_the_mixup_code():
    assert n_params(create("preact_resnet18", final_norm=False)) == 11_171_146  # 11,172,170 − 2·512


@pytest.mark.parametrize(
    ("name", "depth"),
    [("resnet6", 6), ("resnet10", 10), ("resnet14", 14), ("resnet18", 18), ("preact_resnet18", 18)],
)
def test_depth_is_the_name(name, depth):
    model = create(name)
    assert len(plan_layers(model)) == depth
    with pytest.raises(SpecError, match="out of range"):
        create(name, norm_at=[depth])


@pytest.mark.parametrize(
    ("name", "channels", "size"), [("resnet6", 16, 32), ("resnet10", 32, 16), ("resnet14", 64, 8)]
)
def test_final_feature_map(name, channels, size):
    model = create(name)
    seen = []
    model.head.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[1:])))
    model.eval()(torch.zeros(1, 3, 32, 32))
    assert seen == [(channels, size, size)]


def test_resnets_default_to_batchnorm_on_every_conv():
    for name in ("resnet6", "resnet10", "resnet14", "resnet18", "preact_resnet18"):
        assert MODELS.get_parameters(name)["norm"].default == "batchnorm"
    model = create("resnet14")
    layers = plan_layers(model)
    assert [layer.bias is None for layer in layers] == [True] * 13 + [False]
    assert sum(isinstance(m, BN) for m in model.modules()) == 13 + 2  # + two shortcut norms


def test_norm_none_has_no_norms_and_keeps_biases():
    model = create("resnet10", norm="none")
    assert not any(isinstance(m, BN) for m in model.modules())
    assert all(layer.bias is not None for layer in plan_layers(model))


def test_pad_shortcut_subsamples_normalizes_and_zero_pads():
    model = create("resnet10").train()
    shortcut = model.stages[1][0].shortcut
    assert isinstance(shortcut, PadShortcut)
    x = torch.randn(4, 16, 32, 32)
    out = shortcut(x)
    assert out.shape == (4, 32, 16, 16)
    assert torch.count_nonzero(out[:, 16:]) == 0
    expected = nn.functional.batch_norm(x[:, :, ::2, ::2], None, None, training=True)
    torch.testing.assert_close(out[:, :16], expected)


def test_zero_init_residual_makes_blocks_start_as_activated_shortcuts():
    model = create("resnet10").train()
    x = torch.randn(4, 16, 32, 32)
    for block in (model.stages[0][0], model.stages[1][0]):
        assert isinstance(block, BasicBlock)
        assert torch.equal(block(x), torch.relu(block.shortcut(x)))
        x = block(x)
    plain = create("resnet10", zero_init_residual=False)
    assert torch.all(plain.stages[0][0].norm2.weight == 1)


def test_preact_norm_index_is_the_layer_whose_output_it_reads():
    model = create("preact_resnet18", norm_at=[0])  # the stem conv's output, read by block 1
    norms = [m for m in model.modules() if isinstance(m, BN)]
    assert len(norms) == 1 and norms[0] is model.stages[0][0].norm1
    layers = plan_layers(model)
    assert layers[0].bias is None and all(layer.bias is not None for layer in layers[1:])
    model = create("preact_resnet18", norm_at=[16])  # the last conv: the final norm before pooling
    assert isinstance(model.head[0], nn.BatchNorm2d)
    assert sum(isinstance(m, BN) for m in model.modules()) == 1


def test_preact_blocks_and_projection_shortcuts():
    model = create("preact_resnet18")
    blocks = [b for b in model.modules() if isinstance(b, PreActBlock)]
    assert len(blocks) == 8
    projections = [b.shortcut for b in blocks if b.shortcut is not None]
    shapes = [(p.in_channels, p.out_channels, p.stride) for p in projections]
    assert shapes == [(64, 128, (2, 2)), (128, 256, (2, 2)), (256, 512, (2, 2))]
    assert sum(isinstance(m, BN) for m in model.modules()) == 17  # 16 in blocks + final
    assert sum(isinstance(m, BN) for m in create("preact_resnet18", final_norm=False).modules()) == 16


def test_resnets_take_one_channel_inputs():
    out = create("resnet6", in_shape=(1, 28, 28), out_dim=3).eval()(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 3)
