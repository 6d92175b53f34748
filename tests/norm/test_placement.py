"""Norm placement: named placements, counts, explicit indices, the thesis' configurations, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ablab.components  # noqa: F401  (registers every component)
from ablab.errors import SpecError
from ablab.norm.batchnorm import AblatedBatchNorm
from ablab.norm.plan import NormPlan, resolve_placement
from ablab.registry import MODELS

# (model, in_shape, conv/linear layers); the mlp has four hidden widths, so five linear layers
MODELS_UNDER_TEST = {
    "mlp": ((10,), 5, {"widths": [8, 8, 8, 8]}),
    "3c3d": ((3, 32, 32), 6, {}),
    "allcnnc": ((3, 32, 32), 9, {}),
}


def create(name: str, **params) -> nn.Module:
    in_shape, _, extra = MODELS_UNDER_TEST[name]
    with torch.device("meta"):  # structure only: no memory, no init cost
        return MODELS.create({"name": name, **extra, **params}, in_shape=in_shape, out_dim=10)


def normalized_layers(model: nn.Module) -> list[int]:
    """Indices of the conv/linear layers directly followed by a norm layer (forward order)."""
    modules = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, AblatedBatchNorm))]
    return [
        i
        for i, layer in enumerate(m for m in modules if not isinstance(m, AblatedBatchNorm))
        if _next_after(modules, layer) is not None
    ]


def _next_after(modules: list[nn.Module], layer: nn.Module) -> nn.Module | None:
    k = next(i for i, m in enumerate(modules) if m is layer)
    nxt = modules[k + 1] if k + 1 < len(modules) else None
    return nxt if isinstance(nxt, AblatedBatchNorm) else None


def check_model(name: str, norm_at, expected: list[int]) -> None:
    model = create(name, norm="batchnorm", norm_at=norm_at)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == MODELS_UNDER_TEST[name][1]
    assert normalized_layers(model) == expected
    assert [i for i, layer in enumerate(layers) if layer.bias is None] == expected
    norms = [m for m in model.modules() if isinstance(m, AblatedBatchNorm)]
    widths = [getattr(m, "out_features", None) or m.out_channels for m in layers]
    assert [m.num_features for m in norms] == [widths[i] for i in expected]


NAMED = {  # placement -> expected indices as a function of n
    "all_hidden": lambda n: list(range(n - 1)),
    "all": lambda n: list(range(n)),
    "first": lambda n: [0],
    "penultimate": lambda n: [n - 2],
    "last": lambda n: [n - 1],
}


@pytest.mark.parametrize("name", sorted(MODELS_UNDER_TEST))
@pytest.mark.parametrize("placement", sorted(NAMED))
def test_named_placements(name, placement):
    check_model(name, placement, NAMED[placement](MODELS_UNDER_TEST[name][1]))


@pytest.mark.parametrize(
    ("name", "norm_at", "expected"),
    [
        ("mlp", {"first_k": 2}, [0, 1]),
        ("mlp", {"last_k": 2}, [3, 4]),
        ("mlp", {"last_hidden_k": 2}, [2, 3]),
        ("mlp", {"first_k": 5}, [0, 1, 2, 3, 4]),
        ("3c3d", {"first_k": 3}, [0, 1, 2]),
        ("3c3d", {"last_k": 1}, [5]),
        ("allcnnc", {"last_hidden_k": 8}, list(range(8))),
        ("allcnnc", [0, -1], [0, 8]),
        ("mlp", [-2, 1], [1, 3]),
        ("3c3d", [], []),
    ],
)
def test_counts_and_explicit_indices(name, norm_at, expected):
    check_model(name, norm_at, expected)


def test_no_norm_keeps_every_bias_whatever_the_placement():
    model = create("3c3d", norm="none", norm_at="all")
    assert all(m.bias is not None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert not any(isinstance(m, AblatedBatchNorm) for m in model.modules())


# Dissecting BatchNorm (seed 001): each configuration it trains, as a placement
THESIS = [
    ("standard setup, 3C3D", "3c3d", "all_hidden", [0, 1, 2, 3, 4]),
    ("standard setup, ALL-CNN-C", "allcnnc", "all_hidden", [0, 1, 2, 3, 4, 5, 6, 7]),
    ("BN after the last conv too (4.1.3)", "allcnnc", "all", [0, 1, 2, 3, 4, 5, 6, 7, 8]),
    ("one BN after the first layer, 3C3D", "3c3d", "first", [0]),
    ("one BN after the first layer, ALL-CNN-C", "allcnnc", "first", [0]),
    ("one BN at the penultimate layer, 3C3D", "3c3d", "penultimate", [4]),
    ("one BN at the penultimate layer, ALL-CNN-C", "allcnnc", "penultimate", [7]),
    ("one BN after the last conv layer, ALL-CNN-C", "allcnnc", "last", [8]),
    ("three BN layers at the end, 3C3D", "3c3d", {"last_hidden_k": 3}, [2, 3, 4]),
    ("three BN layers at the start, 3C3D", "3c3d", {"first_k": 3}, [0, 1, 2]),
    ("four BN layers at the end, ALL-CNN-C", "allcnnc", {"last_hidden_k": 4}, [4, 5, 6, 7]),
    ("four BN layers at the end, last included", "allcnnc", {"last_k": 4}, [5, 6, 7, 8]),
]


@pytest.mark.parametrize(("what", "name", "norm_at", "expected"), THESIS, ids=[t[0] for t in THESIS])
def test_thesis_configurations(what, name, norm_at, expected):
    assert list(resolve_placement(norm_at, MODELS_UNDER_TEST[name][1])) == expected
    check_model(name, norm_at, expected)


def test_thesis_position_vectors_are_prefixes_and_suffixes_of_the_hidden_layers():
    # the author's position arrays for 3C3D: 0/1 per hidden layer, prefixes then suffixes
    for k in range(1, 6):
        assert resolve_placement({"first_k": k}, 6) == tuple(range(k))
        assert resolve_placement({"last_hidden_k": k}, 6) == tuple(range(5 - k, 5))


# --- errors ---


@pytest.mark.parametrize(
    ("name", "norm_at", "match"),
    [
        ("mlp", [5], "out of range"),
        ("mlp", [-6], "out of range"),
        ("3c3d", [6], "out of range"),
        ("allcnnc", [9], "out of range"),
        ("3c3d", {"first_k": 7}, "out of range"),
        ("3c3d", {"last_k": 7}, "out of range"),
        ("3c3d", {"last_hidden_k": 6}, "out of range"),
        ("allcnnc", [1, -8], "twice"),
    ],
)
def test_out_of_range_is_a_spec_error_when_the_model_is_built(name, norm_at, match):
    MODELS.validate({"name": name, "norm": "batchnorm", "norm_at": norm_at})  # the form is fine
    with pytest.raises(SpecError, match=match) as err:
        create(name, norm="batchnorm", norm_at=norm_at)
    assert err.value.field == "norm_at"


@pytest.mark.parametrize(
    ("norm_at", "match"),
    [
        ("firts", "Did you mean 'first'"),
        ("everywhere", "all_hidden"),
        ({"first": 2}, "first_k"),
        ({"first_k": 2, "last_k": 1}, "exactly one key"),
        ({"first_k": 0}, "positive"),
        ({"last_k": "2"}, "positive"),
        ([0, "1"], "integers"),
        ([0, True], "integers"),
        (3, "list of layer indices"),
    ],
)
def test_unknown_placement_fails_at_validation(norm_at, match):
    with pytest.raises(SpecError, match=match) as err:
        MODELS.validate({"name": "3c3d", "norm": "batchnorm", "norm_at": norm_at})
    assert err.value.field == "norm_at"


def test_norm_plan_checks_placements_given_directly():
    with pytest.raises(SpecError, match="unknown placement") as err:
        NormPlan("batchnorm", n_layers=3, placement="middle")
    assert err.value.field == "norm_at"
    with pytest.raises(SpecError, match="penultimate"):
        NormPlan("batchnorm", n_layers=1, placement="penultimate")
    assert NormPlan("batchnorm", n_layers=1).indices == frozenset()  # the default fits every model
    assert NormPlan("none", n_layers=4, placement="all").indices == frozenset()


def test_validated_placement_is_normalized():
    spec = MODELS.validate({"name": "mlp", "norm": "batchnorm", "norm_at": (0, -1)})
    assert spec["norm_at"] == [0, -1]
    assert MODELS.validate({"name": "mlp", "norm_at": {"last_k": 2}})["norm_at"] == {"last_k": 2}
