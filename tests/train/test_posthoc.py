"""Post-hoc studies: stored runs evaluated without training, as resumable units of their own."""

import copy
import sqlite3

import numpy as np
import pytest
import torch

import ablab
from ablab.cli import main
from ablab.store import Store
from conftest import TINY_BASE, stored


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished 4-run study (2 learning rates × 2 seeds) with final checkpoints."""
    import yaml

    d = tmp_path_factory.mktemp("src")
    base = {**copy.deepcopy(TINY_BASE), "record": {"every_steps": 5, "eval_splits": ["test"],
                                                    "checkpoints": {"final": True}}}
    study = {"name": "src", "base": base, "grid": {"optimizer.lr": [0.1, 0.02]}, "seeds": {"replicates": 2}}
    (d / "src.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(d / "src.yaml"), "--out", str(d / "out")]) == 0
    return d / "out"


def _posthoc(source, **extra):
    study = {"name": "pairs", "source": {"study": str(source), "checkpoint": "final"}, "members": "pairs",
             "base": {"evaluators": ["disagreement"], "eval_splits": ["test"], "device": "cpu"}}
    study.update(extra)
    return study


def _outputs(src: Store, run: str) -> torch.Tensor:
    from ablab.spec import RunSpec
    from ablab.train.build import build_model, load_run_data

    spec = RunSpec.model_validate(src.runs().set_index("run").spec[run])
    data = load_run_data(spec)
    model = build_model(spec, data)
    model.load_state_dict(src.load_checkpoint(run, "final")["model"])
    model.eval()
    with torch.no_grad():
        return model(data.splits["test"].x)


def test_pairs_over_four_runs_give_twelve_units_with_the_right_numbers(source, write_study, tmp_path, capsys):
    spec = write_study(_posthoc(source))
    assert main(["validate", str(spec)]) == 0
    assert "12 units" in capsys.readouterr().out
    out = tmp_path / "pairs"
    assert main(["run", str(spec), "--out", str(out), "--workers", "2"]) == 0
    metrics, runs = stored(out)
    assert len(runs) == 12 and set(runs.status) == {"done"}
    src = Store.open(source)
    try:
        preds = {r: _outputs(src, r).argmax(1) for r in src.runs().run}
    finally:
        src.close()
    pairs = {tuple(s["members"][i]["run"] for i in range(2)) for s in runs.spec}
    assert len(pairs) == 12 and all(a != b for a, b in pairs)
    for r in runs.itertuples():
        a, b = (m["run"] for m in r.spec["members"])
        value = metrics[(metrics.run == r.run) & (metrics.name == "disagreement")].value.item()
        assert value == pytest.approx((preds[a] != preds[b]).double().mean().item())
        assert r.origin["members"][0].startswith("optimizer.lr=")
    # the report shows the post-hoc study like any other
    assert main(["report", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    assert "test.disagreement" in page


def test_a_post_hoc_study_resumes_only_its_missing_units(source, write_study, tmp_path):
    spec = write_study(_posthoc(source))
    out = tmp_path / "pairs"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    con = sqlite3.connect(out / "ablab.db")
    victims = [r[0] for r in con.execute("SELECT id FROM runs ORDER BY id LIMIT 3")]
    with con:
        con.executemany("UPDATE runs SET status='running' WHERE id=?", [(v,) for v in victims])
        con.executemany("DELETE FROM metrics WHERE run=?", [(v,) for v in victims])
    before = dict(con.execute("SELECT id, finished FROM runs").fetchall())
    con.close()
    assert main(["run", str(spec), "--out", str(out)]) == 0
    con = sqlite3.connect(out / "ablab.db")
    after = dict(con.execute("SELECT id, finished FROM runs").fetchall())
    counts = dict(con.execute("SELECT run, COUNT(*) FROM metrics GROUP BY run").fetchall())
    con.close()
    assert {r for r in after if after[r] != before[r]} == set(victims)
    assert set(counts.values()) == {1} and len(counts) == 12


def test_single_members_with_an_evaluator_axis_and_groups(source, write_study, tmp_path):
    study = _posthoc(source, members="single", base={"evaluators": ["standard", "predictions"], "device": "cpu"},
                     grid={"eval_batch_size": [7, 1000]})
    out = tmp_path / "single"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 0
    metrics, runs = stored(out)
    assert len(runs) == 8
    # the evaluation batch size does not change the numbers (a short last batch is weighted per example)
    acc = metrics[metrics.name == "accuracy"].merge(runs[["run", "label", "spec"]], on="run")
    acc["member"] = [s["members"][0]["run"] for s in acc.spec]
    by = acc.pivot_table(index="member", columns="label", values="value")
    np.testing.assert_allclose(by.iloc[:, 0], by.iloc[:, 1], rtol=0, atol=1e-12)
    store = Store.open(out)
    try:
        src = Store.open(source)
        r = runs.iloc[0]
        pred = store.load_predictions(r.run, "test")
        np.testing.assert_allclose(pred, _outputs(src, r.spec["members"][0]["run"]).numpy(), rtol=1e-6, atol=1e-6)
        src.close()
    finally:
        store.close()
    groups = _posthoc(source, members={"groups": 2}, base={"evaluators": ["ensemble"], "device": "cpu"})
    out2 = tmp_path / "groups"
    assert main(["run", str(write_study(groups, "g.yaml")), "--out", str(out2)]) == 0
    _, runs2 = stored(out2)
    assert len(runs2) == 2 and all(len(s["members"]) == 2 for s in runs2.spec)
    members = [m["run"] for s in runs2.spec for m in s["members"]]
    assert len(set(members)) == 4  # disjoint


@pytest.mark.parametrize("change, message", [
    ({"source": {"study": "no/such/dir"}}, "not an ablab results directory"),
    ({"source": {"study": "SRC", "runs": {"optimizer.lr": 0.5}}}, "no finished run of"),
    ({"source": {"study": "SRC", "checkpoint": 1}}, "has no checkpoint at epoch 1"),
    ({"members": "single"}, "needs at least 2 models"),
    ({"members": "pairs", "base": {"evaluators": ["standard"]}}, "evaluates 1 model(s) at a time"),
])
def test_bad_post_hoc_sources_are_one_clear_error_and_write_nothing(source, write_study, tmp_path, capsys, change,
                                                                    message):
    study = _posthoc(source)
    for key, value in change.items():
        if isinstance(value, dict) and value.get("study") == "SRC":
            value = {**value, "study": str(source)}
        study[key] = value
    if change.get("members") == "single":
        study["base"] = {"evaluators": ["standard", "disagreement"]}
    out = tmp_path / "bad"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and (message in err or message.replace("(s)", "") in err), err
    assert not out.exists()


def test_units_are_labelled_by_source_variants_and_keep_their_ids_when_the_pool_changes(source, write_study):
    from ablab.spec import expand, load_study

    every = expand(load_study(write_study(_posthoc(source), "a.yaml")), open_stored=ablab.load)
    narrow = _posthoc(source)
    narrow["source"]["runs"] = {"optimizer.lr": 0.1}
    some = expand(load_study(write_study(narrow, "b.yaml")), open_stored=ablab.load)
    assert len(every) == 12 and len(some) == 2
    assert {v.id for v in some} <= {v.id for v in every}  # a unit's id is its members and settings
    labels = sorted({v.label for v in every})
    assert labels == sorted(f"optimizer.lr={a} × optimizer.lr={b}" for a in (0.1, 0.02) for b in (0.1, 0.02))
    groups = expand(load_study(write_study(_posthoc(source, members={"groups": 3},
                                                    base={"evaluators": ["ensemble"]}), "c.yaml")), open_stored=ablab.load)
    assert len(groups) == 1 and len(groups[0].origin["left_out"]) == 1


def test_a_source_stored_by_another_version_is_one_clear_error(source, write_study, tmp_path, capsys):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(source, old)
    con = sqlite3.connect(old / "ablab.db")
    with con:  # a run written when SAM was still a 'sam' block
        spec = json.loads(con.execute("SELECT spec_json FROM runs LIMIT 1").fetchone()[0])
        spec["sam"] = {"rho": 0.05}
        con.execute("UPDATE runs SET spec_json=? WHERE id=(SELECT id FROM runs LIMIT 1)", (json.dumps(spec),))
    con.close()
    study = _posthoc(old, members="single", base={"evaluators": ["standard"], "device": "cpu"})
    out = tmp_path / "p"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stored by another version of ablab" in err and "Traceback" not in err and err.count("error:") == 1
    assert not out.exists()


def _copy_and_lose_a_checkpoint(source, tmp_path, how: str) -> tuple:
    """A copy of the source study whose first run's final checkpoint is gone: its file, or its index row."""
    import shutil

    from ablab.artifacts import checkpoint_name

    src = tmp_path / "src"
    shutil.copytree(source, src)
    store = Store.open(src)
    try:
        run = store.runs().run[0]
        epoch = store.final_epoch(run)
        path = store.artifact_path(run, checkpoint_name(epoch))
    finally:
        store.close()
    if how == "file":
        path.unlink()
    else:
        con = sqlite3.connect(src / "ablab.db")
        with con:
            con.execute("DELETE FROM artifacts WHERE run=? AND kind='checkpoint'", (run,))
        con.close()
    return src, run, epoch


def _unit_of(runs, member: str):
    return runs[[s["members"][0]["run"] == member for s in runs.spec]].iloc[0]


def test_a_unit_whose_checkpoint_file_is_gone_fails_with_the_reason_and_the_others_run(source, write_study, tmp_path):
    """The file went after validation (which refuses a study whose source checkpoint is missing, exit 2):
    that unit fails with the reason, the others run."""
    from ablab.execute import run_study
    from ablab.spec import expand, load_study

    src, run, _ = _copy_and_lose_a_checkpoint(source, tmp_path, "file")
    study = _posthoc(src, members="single", base={"evaluators": ["standard"], "device": "cpu"})
    file = write_study(study)
    assert main(["validate", str(file)]) == 2
    variants = expand(load_study(file), str(file), open_stored=ablab.load)
    summary = run_study(load_study(file), str(file), variants, tmp_path / "p")  # a failed unit, not a crashed driver
    assert summary.counts == {"done": 3, "failed": 1}
    _, runs = stored(tmp_path / "p")
    lost = _unit_of(runs, run)
    assert lost.status == "failed" and "the stored file is missing" in lost.error


def test_a_unit_whose_checkpoint_is_not_stored_fails_before_it_starts(source, write_study, tmp_path):
    """The index lost the checkpoint after the study was expanded: the driver, resolving the unit's files,
    stores the unit as failed with the reason; no worker starts for it."""
    from ablab.execute import run_study
    from ablab.spec import expand, load_study

    study = _posthoc(source, members="single", base={"evaluators": ["standard"], "device": "cpu"})
    file = write_study(study)
    variants = expand(load_study(file), str(file), open_stored=ablab.load)
    src, run, epoch = _copy_and_lose_a_checkpoint(source, tmp_path, "row")
    for v in variants:  # the units read the copy
        v.spec.source_study = str(src)
    out = tmp_path / "p"
    summary = run_study(load_study(file), str(file), variants, out)
    assert summary.counts == {"done": 3, "failed": 1}
    _, runs = stored(out)
    lost = _unit_of(runs, run)
    assert f"run {run} has no checkpoint at epoch {epoch} (it has: none)" in lost.error


def test_a_source_without_axes_is_named_by_its_study_not_base(source, write_study):
    """Issue 21: pairs of a source study without axes (its one variant is 'base') read '<study> × <study>',
    not 'base × base', which would name the post-hoc study's own base."""
    from ablab.spec import expand, load_study

    class NoAxes:  # the stored source as a study without a grid would have stored it
        def __init__(self, store):
            self.store = store

        def runs(self):
            return self.store.runs().assign(label="base", axes=[{}] * len(self.store.runs()))

        def __getattr__(self, name):
            return getattr(self.store, name)

    units = expand(load_study(write_study(_posthoc(source), "a.yaml")), open_stored=lambda p: NoAxes(ablab.load(p)))
    assert {v.label for v in units} == {"src × src"}
    assert [m.label for m in units[0].spec.members] == ["base #0", "base #1"]  # members keep their stored labels
