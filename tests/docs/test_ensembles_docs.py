"""Every study in docs/ensembles.md runs as written, in order, and stores what the page says."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ablab.cli import main
from ablab.registry import DATASETS
from ablab.store import Store


DOC = Path(__file__).resolve().parents[2] / "docs" / "ensembles.md"


def _examples() -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)]


def _outputs(src: Store, run: str, epoch) -> np.ndarray:
    """A stored checkpoint's test logits, computed directly from the rebuilt model."""
    from ablab.spec import RunSpec
    from ablab.train.build import build_model, load_run_data

    spec = RunSpec.model_validate(src.runs().set_index("run").spec[run])
    data = load_run_data(spec)
    model = build_model(spec, data)
    model.load_state_dict(src.load_checkpoint(run, epoch)["model"])
    model.eval()
    with torch.no_grad():
        return model(data.splits["test"].x).numpy()


def test_the_ensembles_page_examples_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    examples = _examples()
    assert [e["name"] for e in examples] == ["ens_source", "ens_pairs", "ens_sizes", "snap_source", "snap_ensembles",
                                             "snap_tta"]
    for study in examples:
        path = tmp_path / f"{study['name']}.yaml"
        path.write_text(yaml.safe_dump(study))
        assert main(["run", str(path)]) == 0, study["name"]
    assert main(["report", "results/snap_tta"]) == 0

    stores = {e["name"]: Store.open(f"results/{e['name']}", readonly=True) for e in examples}
    try:
        labels = DATASETS.create("digits").splits["test"].y
        pairs = stores["ens_pairs"].runs()
        assert len(pairs) == 2
        for unit in pairs.itertuples():  # the unit's predictions: the mean of its members' logits
            want = np.mean([_outputs(stores["ens_source"], m["run"], "final") for m in unit.spec["members"]], axis=0)
            np.testing.assert_allclose(stores["ens_pairs"].load_predictions(unit.run), want, rtol=1e-5, atol=1e-6)
            # the loss is the cross-entropy of the averaged logits, not of the averaged probabilities
            values = stores["ens_pairs"].metrics().query("run == @unit.run").set_index("name").value
            logits = torch.tensor(want)
            assert values["ensemble_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
            probs = torch.stack([torch.tensor(_outputs(stores["ens_source"], m["run"], "final")).softmax(1)
                                 for m in unit.spec["members"]]).mean(0)
            assert abs(F.nll_loss(probs.log(), labels).item() - values["ensemble_loss"]) > 1e-4
            assert values["ensemble_accuracy"] == (logits.argmax(1) == labels).double().mean().item()
        sizes = stores["ens_sizes"].runs()  # 4 ensembles of one, then the 2 pairs of ens_pairs with their ids
        assert list(sizes.groupby("label", sort=False).size()) == [4, 2]
        assert set(pairs.run) < set(sizes.run)
        snaps = stores["snap_ensembles"].runs()
        assert len(snaps) == 2 and all([m["epoch"] for m in s["members"]] == [2, 4, 6] for s in snaps.spec)
        unit = snaps.iloc[0]
        run = unit.spec["members"][0]["run"]
        want = np.mean([_outputs(stores["snap_source"], run, e) for e in (2, 4, 6)], axis=0)
        np.testing.assert_allclose(stores["snap_ensembles"].load_predictions(unit.run), want, rtol=1e-5, atol=1e-6)
        tta = stores["snap_tta"]
        t = tta.runs().iloc[0]
        for kind in ("predictions", "tta_flip_predictions", "tta_crop_predictions"):
            assert tta.load_predictions(t.run, kind=kind).shape == want.shape
        names = set(tta.metrics().name)
        assert {"ensemble_accuracy", "tta_flip_accuracy", "tta_crop_accuracy"} <= names
    finally:
        for s in stores.values():
            s.close()

    too_many = {**examples[1], "members": {"groups": 5}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(too_many))
    capsys.readouterr()
    assert main(["run", "bad.yaml", "--out", "bad"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "groups of 5 need at least 5 runs; the source has 4" in err
    assert not Path("bad").exists()
