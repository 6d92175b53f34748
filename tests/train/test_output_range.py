"""Probe output_range: a norm layer's x̂ = (y − β)/γ in training vs evaluation against |x̂| ≤ √(B − 1)
(seed 002 Eq. 4.2, App. A, Fig. A.1; checks C4-1 and C4-2)."""

import math

import pytest
import torch
from torch import nn

from ablab.artifacts import OUTPUT_RANGE_FILE, load_npz
from ablab.registry import NORMS, PROBES
from ablab.spec import RunSpec
from ablab.train.loop import train
from conftest import TINY_BASE, run_refused, stored, tiny_study


def record(model: nn.Module, batches, layer: str = "", train_mode: bool = True):
    """Each batch as one recorded training step (or evaluation passes), through the probe; its arrays."""
    probe = PROBES.create({"name": "output_range", "layer": layer}, model=model)
    model.train(train_mode)
    with torch.no_grad():
        for i, x in enumerate(batches):
            probe.before_step(i)
            model(x)
            probe.after_step(i + 1, 0)
    arrays, meta = load_npz(probe.artifacts()[OUTPUT_RANGE_FILE])
    return arrays, meta


def by_hand(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x̂ of BatchNorm in training, per channel over (batch, H, W), the biased variance."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def bn(channels: int, dim: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = NORMS.create("batchnorm", num_features=channels, dim=dim)
    with torch.no_grad():  # γ and β away from 1 and 0 (negative γ included): x̂ divides them out
        layer.weight.uniform_(-2, 2)
        layer.bias.uniform_(-1, 1)
    return nn.Sequential(layer)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (16, 2, 1, 1), (2, 3, 4, 4)])
def test_stored_values_equal_a_direct_computation_and_the_bound_holds_on_random_batches(shape):
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(shape, generator=g) ** 3 * 5 + 2 for _ in range(6)]  # heavy tails
    arrays, meta = record(bn(shape[1]), batches)
    b = shape[0] * shape[2] * shape[3]
    assert meta["layer"] == "0" and arrays["train_B"].tolist() == [b] * 6
    assert arrays["train_steps"].tolist() == [1, 2, 3, 4, 5, 6]
    for i, x in enumerate(batches):
        z = by_hand(x)
        assert arrays["train_min"][i] == pytest.approx(z.min().item(), abs=1e-5)
        assert arrays["train_max"][i] == pytest.approx(z.max().item(), abs=1e-5)
    assert max(abs(arrays["train_min"]).max(), arrays["train_max"].max()) <= math.sqrt(b - 1)


@pytest.mark.parametrize("b", [2, 8, 32])
def test_the_tight_fc_batch_approaches_the_bound(b):
    """x₀ = 0, x_i = a (i > 0): x̂₀ = −(B−1)a/√(a²(B−1) + ε) (Eq. A.23) → −√(B−1) as a grows."""
    x = torch.full((b, 1), 1e3)
    x[0] = 0.0
    arrays, _ = record(bn(1, dim=1), [x])
    expected = -(b - 1) * 1e3 / math.sqrt(1e6 * (b - 1) + 1e-5)
    assert arrays["train_min"][0] == pytest.approx(expected, rel=1e-6)
    assert arrays["train_min"][0] == pytest.approx(-math.sqrt(b - 1), rel=1e-6)
    assert arrays["train_max"][0] == pytest.approx(1 / math.sqrt(b - 1), rel=1e-5)


def test_the_tight_conv_batch_counts_batch_times_positions():
    """Fig. A.1's last layer: 4×4 positions, batch 2 → B = 32, the bound −√31 = −5.57 (one element differs)."""
    x = torch.full((2, 1, 4, 4), 50.0)
    x[0, 0, 0, 0] = 0.0
    arrays, _ = record(bn(1), [x])
    assert arrays["train_B"][0] == 32
    assert arrays["train_min"][0] == pytest.approx(-math.sqrt(31), rel=1e-5)


def test_a_ghost_layer_counts_its_ghost_group_and_stays_inside_its_own_bound():
    torch.manual_seed(0)
    model = nn.Sequential(NORMS.create({"name": "ghost_batchnorm", "ghost_size": 2}, num_features=3, dim=2))
    x = torch.randn(8, 3, 2, 2) ** 3
    arrays, _ = record(model, [x])
    assert arrays["train_B"][0] == 2 * 4
    z = torch.cat([by_hand(part) for part in x.split(2)])
    assert arrays["train_min"][0] == pytest.approx(z.min().item(), abs=1e-5)
    assert abs(arrays["train_min"][0]) <= math.sqrt(7) and arrays["train_max"][0] <= math.sqrt(7)


def test_in_evaluation_the_output_leaves_the_training_bound():
    """C4-2: with the moving averages, an outlier goes far past ±√(B − 1)."""
    model = bn(1, dim=1)
    g = torch.Generator().manual_seed(0)
    record(model, [torch.randn(8, 1, generator=g) for _ in range(20)])  # moving averages ≈ N(0, 1)
    arrays, _ = record(model, [torch.tensor([[100.0], [0.0]])], train_mode=False)
    assert arrays["train_steps"].size == 0 and arrays["eval_max"][0] > 10 * math.sqrt(7)
    layer = model[0]
    direct = (torch.tensor(100.0) - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps)
    assert arrays["eval_max"][0] == pytest.approx(direct.item(), rel=1e-5)


def test_a_run_records_it_and_the_report_shows_it(write_study, tmp_path, capsys):
    from ablab.cli import main

    study = tiny_study(seeds={"replicates": 1})
    study["base"].update({"model": {"name": "mlp", "widths": [16], "norm": "batchnorm"}, "epochs": 1,
                          "record": {"every_steps": 5, "eval_splits": ["test"],
                                     "probes": [{"name": "output_range", "every_steps": 3}]}})
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out), "--report", "--threads", "1"]) == 0, \
        capsys.readouterr().err
    _, runs = stored(out)
    (run,) = runs.run.tolist()
    arrays, meta = load_npz((out / "runs" / run / OUTPUT_RANGE_FILE).read_bytes())
    assert meta["layer"] == "norm0" or meta["layer"].endswith("0")
    assert arrays["train_steps"].tolist() == [3, 6, 9] and set(arrays["train_B"]) == {128}
    assert arrays["eval_epochs"].tolist() == [0, 1]  # before training and after the epoch
    assert (abs(arrays["train_min"]) <= math.sqrt(127)).all() and (arrays["train_max"] <= math.sqrt(127)).all()
    page = (out / "report" / "index.html").read_text()
    assert "Norm output range" in page and (out / "report" / "figures" / "output_range.png").exists()


def test_a_layer_that_is_not_a_norm_layer_is_refused(write_study, tmp_path, capsys):
    study = tiny_study()
    study["base"]["model"] = {"name": "mlp", "widths": [16], "norm": "batchnorm"}
    study["base"]["record"] = {"probes": [{"name": "output_range", "layer": "nope"}]}
    err, path = run_refused(write_study, study, tmp_path, capsys)
    assert path in err and "'nope' is not a norm layer of the model" in err
