"""Validation runs one forward and backward pass of every distinct model × data shape on real data (issue 21)."""

from __future__ import annotations

import copy
import sys

import yaml

from ablab.cli import main
from conftest import TINY_BASE

# a model whose second layer expects one input more than the first gives, for one width only
OWN_MODEL = '''
from torch import nn

import ablab

PASSES = []


class Counted(nn.Sequential):
    def forward(self, x):
        PASSES.append(tuple(x.shape))
        return super().forward(x)


@ablab.register_model("shape_bug_net")
def build(in_shape, out_dim, width: int = 16):
    """A test model that breaks when width is 65."""
    return Counted(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], width), nn.ReLU(),
                   nn.Linear(width + (width == 65), out_dim))
'''


def _study(root, grid: dict, replicates: int = 2):
    (root / "shape_bug_models.py").write_text(OWN_MODEL)
    base = {**copy.deepcopy(TINY_BASE), "model": {"name": "shape_bug_net"}, "epochs": 1}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "bug", "imports": ["shape_bug_models"], "base": base, "grid": grid,
                                    "seeds": {"replicates": replicates}}))
    return path


def test_a_shape_bug_is_exit_2_naming_the_variant_and_the_model(own_code_sandbox, capsys):
    spec = _study(own_code_sandbox, {"model.width": [16, 65]})
    assert main(["validate", str(spec), "--no-timing", "--out", str(own_code_sandbox / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {spec}: base.model: ") and len(err.splitlines()) == 1
    assert "mat1 and mat2 shapes cannot be multiplied" in err and "forward and backward pass" in err
    assert "(variant 'model.width=65')" in err


def test_run_refuses_a_shape_bug_before_anything_is_written(own_code_sandbox, capsys):
    spec = _study(own_code_sandbox, {"model.width": [16, 65]})
    out = own_code_sandbox / "results"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert "mat1 and mat2" in capsys.readouterr().err and not out.exists()


def test_one_pass_per_distinct_model_and_shape_on_a_batch_of_the_real_data(own_code_sandbox, capsys):
    # 2 widths × 2 learning rates × 3 replicates: two distinct models, one data shape
    spec = _study(own_code_sandbox, {"model.width": [16, 32], "optimizer.lr": [0.1, 0.05]}, replicates=3)
    assert main(["validate", str(spec), "--no-timing", "--out", str(own_code_sandbox / "none")]) == 0, \
        capsys.readouterr().err
    passes = sys.modules["shape_bug_models"].PASSES
    assert len(passes) == 2 and all(shape[1:] == (1, 8, 8) for shape in passes)
    assert passes[0][0] == 2  # two examples: a batch, not one


def test_the_pass_runs_in_eval_mode_and_leaves_no_state(own_code_sandbox, capsys):
    """A model's training-only behaviour (here: a gate that would hold training) does not run in the driver, and
    the global random state is as before."""
    import torch

    (own_code_sandbox / "train_only.py").write_text(
        "from torch import nn\nimport ablab\nMODES = []\n\n\nclass M(nn.Sequential):\n"
        "    def forward(self, x):\n        MODES.append(self.training)\n        return super().forward(x)\n\n\n"
        "@ablab.register_model('train_only_net')\ndef build(in_shape, out_dim):\n    \"\"\"A test model.\"\"\"\n"
        "    return M(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, out_dim))\n")
    base = {**copy.deepcopy(TINY_BASE), "model": {"name": "train_only_net"}, "epochs": 1}
    spec = own_code_sandbox / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "m", "imports": ["train_only"], "base": base, "seeds": {"replicates": 1}}))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert main(["validate", str(spec), "--no-timing", "--out", str(own_code_sandbox / "none")]) == 0
    assert sys.modules["train_only"].MODES == [False]
    assert torch.equal(torch.get_rng_state(), before)
