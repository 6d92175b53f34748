"""docs/engine.md's own objective and evaluator run as written: the page's Python blocks become the study's
module, its study runs, and what is stored agrees with direct computations (issue 21)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ablab.cli import main
from conftest import stored

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"


def _section() -> str:
    text = DOC.read_text()
    return text[text.index("## Your own objective and evaluator"):text.index("## Checkpoints")]


def _write_example(root: Path) -> Path:
    """``own_steps/engine.py`` from the section's Python blocks, and the study next to it."""
    section = _section()
    (root / "own_steps").mkdir()
    (root / "own_steps" / "__init__.py").write_text("")
    (root / "own_steps" / "engine.py").write_text("\n\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S)))
    (study,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    (root / "study.yaml").write_text(study)
    return root / "study.yaml"


def test_the_page_registers_through_ablab_not_by_editing_the_package():
    text = DOC.read_text()
    assert "src/ablab/train/objectives.py" not in text and "@OBJECTIVES.register" not in text
    section = _section()
    for name in ("StepSetup", "step(model, forward, optimizer, x, y)", "gradient_evaluations", "directions",
                 "Evaluation", "splits", "epochs", "ablab.register_objective", "ablab.register_evaluator"):
        assert name in section, name


def test_the_own_objective_and_evaluator_run_and_store_what_they_compute(own_code_sandbox, capsys, monkeypatch):
    spec = _write_example(own_code_sandbox)
    monkeypatch.chdir(own_code_sandbox)
    assert main(["list", "objective", "evaluator", "--params", "--spec", str(spec)]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^  flooding +Flooding \(Ishida et al\. 2020\).*\[own_steps\.engine\]$", listed, flags=re.M)
    assert "      level: Annotated[float, Ge(ge=0)] = 0.05" in listed
    assert re.search(r"^  margin +Mean logit margin.*\[own_steps\.engine\]$", listed, flags=re.M)
    assert "  sam " in listed and "  standard " in listed  # the built-ins beside them

    assert main(["run", str(spec), "--out", "r"]) == 0, capsys.readouterr().err
    metrics, runs = stored(Path("r"))
    assert set(runs.status) == {"done"} and len(runs) == 2
    final = metrics[metrics.epoch == 3].set_index(["run", "split", "name"]).value
    by = runs.set_index("label").run
    standard, flooding = by["objective=standard"], by["objective=flooding(level=0.5)"]
    for run in (standard, flooding):
        # a margin below 0 is a wrong arg-max: the fraction is the test error the standard evaluator stores
        assert final[(run, "test", "negative")] == pytest.approx(1 - final[(run, "test", "accuracy")], abs=1e-12)
        assert final[(run, "test", "margin")] > 0
    margins = metrics[metrics.name == "margin"]
    assert sorted(margins.epoch.unique()) == [3] and set(margins.split) == {"test"}  # epochs: last; splits: [test]
    # flooding at b = 0.5 holds the training loss near b: far above the standard run's
    train_loss = metrics[(metrics.split == "batch") & (metrics.name == "loss")].groupby("run").value.last()
    assert train_loss[flooding] > 0.3 > train_loss[standard]
    assert main(["report", "r"]) == 0
    assert "test.margin" in capsys.readouterr().out


def test_the_margin_evaluator_against_a_direct_computation(own_code_sandbox, monkeypatch):
    """Known logits: the margin is computed here by hand, and a short last batch counts per example."""
    _write_example(own_code_sandbox)
    monkeypatch.syspath_prepend(str(own_code_sandbox))
    from ablab.data.base import Split
    from ablab.train.evaluators import EvalContext, ModelView

    engine = __import__("own_steps.engine", fromlist=["Margin"])
    x = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.5, 4.0]])
    y = torch.tensor([0, 2, 2])
    model = nn.Identity()  # the logits are the inputs
    ctx = EvalContext([ModelView(model, model)], nn.functional.cross_entropy, True, batch_size=2, train_batch_size=2)
    result = engine.Margin().evaluate(ctx, "test", Split(x, y), epoch=1)
    # 2 − 1, 1 − 3, 4 − 1.5
    assert result.metrics == {"margin": pytest.approx((1.0 - 2.0 + 2.5) / 3), "negative": pytest.approx(1 / 3)}
    assert engine.Margin().directions(True) == {"margin": "max", "negative": "min"}
    assert engine.Flooding.gradient_evaluations() == 1
    assert "own_steps.engine" in sys.modules
