"""Post-hoc ensembles store what Table 5.5's variability needs (seed 002 §5.5): logits and labels.

The report's ``variability.csv`` of an ensemble study is compared with numpy on the units' stored
logits and the dataset's own labels: accuracy, CE, their SDs (ddof 0) and ensemble Δ (Eq. 5.1).
"""

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from ablab.cli import main
from ablab.registry import DATASETS
from ablab.store import Store
from conftest import TINY_BASE


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Six digits runs with a final checkpoint and a plain 2-epoch schedule, and two 3-snapshot runs."""
    d = tmp_path_factory.mktemp("ens_src")
    base = {**copy.deepcopy(TINY_BASE), "record": {"every_steps": 10, "eval_splits": ["test"],
                                                    "checkpoints": {"final": True}}}
    study = {"name": "src", "base": base, "seeds": {"replicates": 6}}
    (d / "src.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(d / "src.yaml"), "--out", str(d / "src")]) == 0
    snap = {**copy.deepcopy(base), "epochs": 3, "schedule": {"name": "snapshot_cosine", "cycles": 3, "warmup_epochs": 0.5},
            "record": {"every_steps": 10, "eval_splits": ["test"], "checkpoints": {"snapshots": True}}}
    (d / "snap.yaml").write_text(yaml.safe_dump({"name": "snap", "base": snap, "seeds": {"replicates": 3}}))
    assert main(["run", str(d / "snap.yaml"), "--out", str(d / "snap")]) == 0
    return d


def _numpy_row(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean accuracy %, mean CE, their SDs over units (ddof 0) and ensemble Δ % over unit pairs, by hand."""
    z = logits.astype(np.float64)
    acc = np.array([100.0 * np.mean(u.argmax(1) == labels) for u in z])
    ce = np.array([np.mean(np.log(np.exp(u).sum(1)) - u[np.arange(len(labels)), labels]) for u in z])
    deltas = [100.0 * np.mean(((z[i] + z[j]) / 2).argmax(1) == labels) - (acc[i] + acc[j]) / 2
              for i in range(len(z)) for j in range(i + 1, len(z))]
    return {"accuracy_mean": acc.mean(), "loss_mean": ce.mean(), "acc_sd": np.sqrt(np.mean((acc - acc.mean()) ** 2)),
            "loss_sd": np.sqrt(np.mean((ce - ce.mean()) ** 2)), "ensemble_delta": np.mean(deltas)}


def _run_and_report(source, tmp_path, name: str, study: dict) -> tuple[pd.DataFrame, Store]:
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(study))
    out = tmp_path / name
    assert main(["run", str(tmp_path / f"{name}.yaml"), "--out", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    assert "stored no labels" not in (out / "report" / "index.html").read_text()
    return pd.read_csv(out / "report" / "tables" / "variability.csv"), Store.open(out)


@pytest.mark.parametrize("members, source_name, units", [({"groups": 2}, "src", 3), ("snapshots", "snap", 3)])
def test_an_ensemble_study_reports_accuracy_loss_and_ensemble_delta_equal_to_numpy(source, tmp_path, members,
                                                                                    source_name, units):
    study = {"name": "ens", "source": {"study": str(source / source_name)}, "members": members,
             "base": {"evaluators": ["ensemble"], "eval_splits": ["test"], "device": "cpu"}}
    if members != "snapshots":
        study["source"]["checkpoint"] = "final"
    table, store = _run_and_report(source, tmp_path, "ens", study)
    try:
        runs = store.runs()
        assert len(runs) == units and len(table) == 1 and int(table["n"].iloc[0]) == units
        labels = DATASETS.create("digits").splits["test"].y.numpy()
        for run in runs.run:  # every unit stored the split's labels beside its averaged logits
            np.testing.assert_array_equal(store.load_labels(run), labels)
        logits = np.stack([store.load_predictions(r) for r in runs.run])
    finally:
        store.close()
    want = _numpy_row(logits, labels)
    row = table.iloc[0]
    for column, value in want.items():
        assert row[column] == pytest.approx(value, rel=1e-9, abs=1e-12), column
    assert want["ensemble_delta"] != 0 or want["acc_sd"] == 0  # a real ensemble of distinct units


def test_tta_logits_of_a_post_hoc_unit_come_with_the_labels(source, tmp_path):
    study = {"name": "tta", "source": {"study": str(source / "src"), "checkpoint": "final"}, "members": "single",
             "base": {"evaluators": [{"name": "tta_flip", "store_logits": True}], "eval_splits": ["test"],
                      "device": "cpu"}}
    (tmp_path / "tta.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(tmp_path / "tta.yaml"), "--out", str(tmp_path / "tta")]) == 0
    store = Store.open(tmp_path / "tta")
    try:
        run = store.runs().run.iloc[0]
        assert set(store.artifacts(run).kind) == {"tta_flip_predictions", "labels"}
        np.testing.assert_array_equal(store.load_labels(run), DATASETS.create("digits").splits["test"].y.numpy())
    finally:
        store.close()


def test_members_as_a_grid_axis_is_one_study_with_a_row_per_ensemble_size(source, tmp_path, capsys):
    """Table 5.5's N = 2…5 as one study: each size is a variant; its units keep the ids they have alone."""
    study = {"name": "sizes", "source": {"study": str(source / "src"), "checkpoint": "final"},
             "grid": {"members": [{"groups": 2}, {"groups": 3}]},
             "base": {"evaluators": ["ensemble"], "eval_splits": ["test"], "device": "cpu"}}
    (tmp_path / "sizes.yaml").write_text(yaml.safe_dump(study))
    assert main(["validate", str(tmp_path / "sizes.yaml")]) == 0
    assert "5 units in 2 variants (groups of 2, groups of 3)" in capsys.readouterr().out
    table, store = _run_and_report(source, tmp_path, "sizes", study)
    try:
        runs = store.runs()
        labels = DATASETS.create("digits").splits["test"].y.numpy()
        by_label = {label: np.stack([store.load_predictions(r) for r in group.run])
                    for label, group in runs.groupby("label", sort=False)}
        ids = set(runs.run)
    finally:
        store.close()
    assert [len(by_label[k]) for k in ("base × base, members=(groups=2)", "base, members=(groups=3)")] == [3, 2]
    assert list(table["variant"]) == list(by_label) and list(table["n"]) == [3, 2]
    for _, row in table.iterrows():
        want = _numpy_row(by_label[row["variant"]], labels)
        for column, value in want.items():
            assert row[column] == pytest.approx(value, rel=1e-9, abs=1e-12), (row["variant"], column)
    alone = {**study, "members": {"groups": 3}}
    del alone["grid"]
    (tmp_path / "alone.yaml").write_text(yaml.safe_dump(alone))
    assert main(["run", str(tmp_path / "alone.yaml"), "--out", str(tmp_path / "alone")]) == 0
    single = Store.open(tmp_path / "alone")
    try:
        assert set(single.runs().run) <= ids  # the same units, the same ids, with or without the axis
    finally:
        single.close()


@pytest.mark.parametrize("change, message", [
    ({"grid": {"members": [{"groups": 2}, "triples"]}},
     "grid.members: 'triples' is no unit kind: single, pairs, snapshots or {groups: N} (N ≥ 1)"),
    ({"zip": {"members": [{"groups": 0}]}}, "zip.members: {'groups': 0} is no unit kind"),
    ({"grid": {"members": ["pairs"]}, "members": "pairs"},
     "grid.members: 'members' is an axis of this study; leave the top-level"),
])
def test_a_bad_members_axis_is_one_clear_error(source, tmp_path, capsys, change, message):
    study = {"name": "bad", "source": {"study": str(source / "src")},
             "base": {"evaluators": ["ensemble"], "eval_splits": ["test"], "device": "cpu"}, **change}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(study))
    assert main(["validate", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err, err


def test_a_members_axis_in_a_training_study_is_refused(tmp_path, capsys):
    study = {"name": "t", "base": copy.deepcopy(TINY_BASE), "grid": {"members": [{"groups": 2}]}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(study))
    assert main(["validate", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "'members' belongs to a post-hoc study: give 'source' too" in err, err
