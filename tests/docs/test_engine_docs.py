"""Every study in docs/engine.md runs as written, in order, and does what the page says."""

import re
from pathlib import Path

import yaml

from ablab.cli import main
from conftest import stored

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"


def _examples() -> list[dict]:
    """The page's studies of built-in components (the one with ``imports:`` runs in test_own_engine_docs.py)."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    return [study for study in map(yaml.safe_load, blocks) if "imports" not in study]


def test_the_engine_page_examples_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = _examples()
    assert [e["name"] for e in examples] == ["engine_branch", "engine_screen", "engine_continue", "engine_pairs",
                                             "engine_ensemble"]
    for study in examples:
        path = tmp_path / f"{study['name']}.yaml"
        path.write_text(yaml.safe_dump(study))
        assert main(["run", str(path)]) == 0, study["name"]
        assert main(["report", f"results/{study['name']}"]) == 0

    metrics, runs = stored(Path("results/engine_branch"))
    by = runs.set_index("label").run
    loss = metrics[(metrics.split == "test") & (metrics.name == "loss")].set_index(["run", "epoch"]).value
    assert loss[(by["same_order"], 4)] == loss[(by["trunk"], 4)]
    assert loss[(by["new_order"], 2)] == loss[(by["trunk"], 2)] and loss[(by["new_order"], 3)] != loss[(by["trunk"], 3)]

    _, cont = stored(Path("results/engine_continue"))
    assert len(cont) == 2 and [o["selection"]["rank"] for o in cont.origin] == [0, 1]
    page = Path("results/engine_continue/report/index.html").read_text()
    assert "<h2>Continued runs</h2>" in page
    assert "Selected the 2 runs with the lowest final <code>batch.loss</code> of 6 finished runs" in page
    import pandas as pd

    chosen = pd.read_csv("results/engine_continue/report/tables/continued_runs.csv")
    assert chosen["rank"].tolist() == [0, 1] and chosen["value"].is_monotonic_increasing
    branch = Path("results/engine_branch/report/index.html").read_text()
    assert "<h2>Continued runs</h2>" in branch and "augment stochastic" in branch  # new_order re-seeded shuffle

    _, pairs = stored(Path("results/engine_pairs"))
    assert len(pairs) == 2 and set(pairs.status) == {"done"}
    page = Path("results/engine_pairs/report/index.html").read_text()
    assert "<h2>Post-hoc evaluation</h2>" in page and "pairs per unit: 2 units" in page
    assert "test.disagreement" in page
    _, groups = stored(Path("results/engine_ensemble"))
    assert len(groups) == 1
