"""`ablab validate`'s artifact estimate against the bytes a tiny study really stores.

The estimate counts checkpoints and every evaluator file: logits with their labels (one labels file
per split and epoch), TTA logits, activations, and post-hoc ensembles' logits and labels. Stated
tolerance: evaluator outputs within [1, 1.1] × the stored bytes (the estimate is the uncompressed
size: activations are a compressed .npz), checkpoints within [1, 2] × (the estimate assumes two
optimizer state tensors per parameter; SGD with momentum keeps one).
"""

import copy

import pytest
import yaml

from ablab.cli import main
from ablab.spec import expand, load_study
from ablab.store import Store
from ablab.validate import check_variants
from conftest import TINY_BASE

EVALUATORS = ["standard", "predictions", {"name": "tta_flip", "store_logits": True},
              {"name": "activations", "layers": ["fc0", "fc1"], "examples": 100}]


def _estimate(path):
    study = load_study(path)
    return check_variants(expand(study, str(path), open_stored=Store.open), str(path), study=study)


def _stored(out) -> tuple[int, int]:
    """(checkpoint bytes, other artifact bytes) of a stored study, from its artifact index."""
    store = Store.open(out)
    try:
        arts = store.artifacts()
    finally:
        store.close()
    ckpt = arts.kind == "checkpoint"
    return int(arts[ckpt]["size"].sum()), int(arts[~ckpt]["size"].sum())


@pytest.mark.parametrize("evaluators, epochs", [(EVALUATORS, "last"), (["standard", "predictions"], "every")])
def test_the_estimate_of_a_training_study_is_within_the_stated_tolerance(tmp_path, evaluators, epochs):
    evs = copy.deepcopy(evaluators)
    if epochs == "every":
        evs[1] = {"name": "predictions", "epochs": "every"}  # epochs 0, 1, 2, 3: four files of logits and labels
    base = {**copy.deepcopy(TINY_BASE), "epochs": 3, "model": {"name": "mlp", "widths": [32]},
            "record": {"every_steps": 10, "eval_splits": ["test"], "evaluators": evs, "checkpoints": {"final": True}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": base, "seeds": {"replicates": 2}}))
    est = _estimate(path)
    assert main(["run", str(path), "--out", str(tmp_path / "s")]) == 0
    ckpt, outputs = _stored(tmp_path / "s")
    assert outputs <= est.predictions <= 1.1 * outputs, (est.predictions, outputs)
    assert ckpt <= est.checkpoints <= 2 * ckpt, (est.checkpoints, ckpt)


def test_the_estimate_counts_post_hoc_ensemble_and_tta_logits(tmp_path):
    base = {**copy.deepcopy(TINY_BASE), "record": {"every_steps": 10, "checkpoints": {"final": True}}}
    (tmp_path / "src.yaml").write_text(yaml.safe_dump({"name": "src", "base": base, "seeds": {"replicates": 4}}))
    assert main(["run", str(tmp_path / "src.yaml"), "--out", str(tmp_path / "src")]) == 0
    study = {"name": "ens", "source": {"study": str(tmp_path / "src"), "checkpoint": "final"},
             "zip": {"members": [{"groups": 2}, "single"],
                     "evaluators": [["ensemble", {"name": "tta_flip", "store_logits": True}],
                                    ["ensemble", {"name": "activations", "layers": ["fc0"], "examples": 50}]]},
             "base": {"eval_splits": ["test"], "device": "cpu"}}
    (tmp_path / "ens.yaml").write_text(yaml.safe_dump(study))
    est = _estimate(tmp_path / "ens.yaml")
    assert main(["run", str(tmp_path / "ens.yaml"), "--out", str(tmp_path / "ens")]) == 0
    ckpt, outputs = _stored(tmp_path / "ens")
    assert ckpt == 0 and est.checkpoints == 0
    assert outputs <= est.predictions <= 1.1 * outputs, (est.predictions, outputs)
