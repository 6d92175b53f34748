"""The probes on hand-made batches with known answers (training runs: test_recorded_values.py)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ablab.artifacts import load_npz
from ablab.train.probes import NormParams, ReluSparsity


class TwoRelus(nn.Module):
    """Input → relu_a → (relu_b only when ``use_b``): a ReLU that may not run in a step."""

    def __init__(self):
        super().__init__()
        self.relu_a, self.relu_b = nn.ReLU(), nn.ReLU()
        self.use_b = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu_a(x)
        return self.relu_b(x - 1) if self.use_b else x


def record(probe: ReluSparsity, model: nn.Module, batches: list[torch.Tensor], passes: int = 1) -> dict:
    """Drive the probe as the loop does: every step is recorded; ``passes`` forwards per step (SAM: 2)."""
    probe.after_step(0, 0)
    for step, x in enumerate(batches):
        probe.before_step(step)
        for i in range(passes):
            model(x if i == 0 else -x)
        probe.after_step(step + 1, 1)
    arrays, meta = load_npz(probe.artifacts()[ReluSparsity.artifact])
    return {"steps": list(arrays["steps"]), "layers": meta["layers"], "sparsity": arrays["sparsity"]}


def test_relu_sparsity_divides_each_step_by_its_own_element_count():
    """Batches of 4 and 1 examples (2 features), the short one last: each step over its own count."""
    model = TwoRelus()
    big = torch.tensor([[1.0, -1.0], [0.0, 2.0], [3.0, -4.0], [5.0, 6.0]])
    short = torch.tensor([[-1.0, 2.0]])
    out = record(ReluSparsity(model, every_steps=1), model, [big, short, big, short])
    assert out["steps"] == [1, 2, 3, 4] and out["layers"] == ["relu_a", "relu_b"]
    # relu_a zeroes 3 of 8 and 1 of 2; relu_b sees relu_a(x) − 1, zero where relu_a(x) ≤ 1: 4 of 8, 1 of 2
    expected = [[3 / 8, 4 / 8], [1 / 2, 1 / 2]] * 2
    np.testing.assert_array_equal(out["sparsity"], np.float32(expected))


def test_relu_sparsity_ignores_a_second_forward_in_the_same_step():
    """SAM's second pass (here: on −x) does not replace the clean pass's counts."""
    model = TwoRelus()
    x = torch.tensor([[1.0, -1.0, 2.0, 3.0]])
    out = record(ReluSparsity(model, every_steps=1), model, [x], passes=2)
    np.testing.assert_array_equal(out["sparsity"], np.float32([[1 / 4, 2 / 4]]))


def test_relu_sparsity_is_nan_where_undefined():
    """NaN activations (a diverged forward) and a ReLU that did not run leave NaN, not a shifted row."""
    model = TwoRelus()
    probe = ReluSparsity(model, every_steps=1)
    nan_batch = torch.tensor([[math.nan, -1.0]])
    probe.after_step(0, 0)
    probe.before_step(0)
    model(nan_batch)
    probe.after_step(1, 1)
    model.use_b = False
    probe.before_step(1)
    model(torch.tensor([[-1.0, 1.0]]))
    probe.after_step(2, 1)
    arrays, _ = load_npz(probe.artifacts()[ReluSparsity.artifact])
    assert np.isnan(arrays["sparsity"][0]).all()
    assert arrays["sparsity"][1, 0] == 0.5 and np.isnan(arrays["sparsity"][1, 1])


def test_relu_sparsity_records_every_kth_step_only():
    model = TwoRelus()
    batches = [torch.full((2, 2), float(i % 2)) for i in range(7)]  # batches 0, 2, 4, 6 zeros; 1, 3, 5 ones
    out = record(ReluSparsity(model, every_steps=3), model, batches)
    assert out["steps"] == [3, 6]  # steps 3 and 6 ran batches 2 (zeros) and 5 (ones; relu_b sees 1 − 1)
    np.testing.assert_array_equal(out["sparsity"], np.float32([[1.0, 1.0], [0.0, 1.0]]))


def test_norm_params_of_layers_without_affine_parameters_or_with_2d_ones():
    """LayerNorm/GroupNorm without affine parameters store γ = 1, β = 0; a 2-d LayerNorm γ is flattened."""
    model = nn.ModuleDict({
        "ln": nn.LayerNorm(6, elementwise_affine=False),
        "gn": nn.GroupNorm(2, 6, affine=False),
        "ln2d": nn.LayerNorm((2, 3)),
    })
    with torch.no_grad():
        model["ln2d"].weight.copy_(torch.arange(6.0).reshape(2, 3))
        model["ln2d"].bias.copy_(-torch.arange(6.0).reshape(2, 3))
    probe = NormParams(model, every_steps=1)
    probe.after_step(0, 0)
    arrays, meta = load_npz(probe.artifacts()[NormParams.artifact])
    assert [(m["name"], m["features"]) for m in meta["layers"]] == [("ln", 6), ("gn", 6), ("ln2d", 6)]
    for name in ("ln", "gn"):
        np.testing.assert_array_equal(arrays[f"{name}/gamma"], np.ones((1, 6), np.float32))
        np.testing.assert_array_equal(arrays[f"{name}/beta"], np.zeros((1, 6), np.float32))
    np.testing.assert_array_equal(arrays["ln2d/gamma"], np.arange(6.0, dtype=np.float32)[None])
    np.testing.assert_array_equal(arrays["ln2d/beta"], -np.arange(6.0, dtype=np.float32)[None])
    assert meta["layers"][0]["learnable"] == {"gamma": False, "beta": False}
