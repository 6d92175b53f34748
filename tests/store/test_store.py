import sqlite3

import pytest

import ablab
from ablab.errors import StoreError
from ablab.spec import expand, load_study
from ablab.store import Store
from ablab.train.result import RunResult
from conftest import tiny_study


@pytest.fixture
def study_store(tmp_path, write_study):
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.01]}))
    study = load_study(path)
    variants = expand(study, str(path))
    store = Store.create(tmp_path / "results")
    store.sync_study(study, str(path), variants)
    yield store, study, variants, path
    store.close()


def _result(run_id, status="done", value=0.5):
    return RunResult(run_id, status, metrics=[(0, 0, "test", "accuracy", 0.1), (10, 1, "test", "accuracy", value)],
                     artifacts={"probe.json": b'{"a": 1}'}, device="cpu", duration_s=1.5, started=1.0)


def test_round_trip_through_sqlite_and_pandas(study_store):
    store, study, variants, _ = study_store
    store.record(_result(variants[0].id, value=0.75))
    loaded = ablab.load(store.path)
    m = loaded.metrics()
    assert list(m.columns) == ["run", "step", "epoch", "split", "name", "value"]
    assert m[m.run == variants[0].id].value.tolist() == [0.1, 0.75]
    runs = loaded.runs()
    assert runs.run.tolist() == [v.id for v in variants]
    row = runs.set_index("run").loc[variants[0].id]
    assert row.status == "done" and row.label == "optimizer.lr=0.1" and row["axes"] == {"optimizer.lr": 0.1}
    assert row.spec == variants[0].spec.model_dump(mode="json")  # resolved config kept beside the numbers
    assert row.code_version.startswith(ablab.__version__ + "+")
    assert loaded.study()["name"] == "tiny"


def test_artifacts_are_written_atomically(study_store):
    store, _, variants, _ = study_store
    store.record(_result(variants[0].id))
    run_dir = store.path / "runs" / variants[0].id
    assert (run_dir / "probe.json").read_bytes() == b'{"a": 1}'
    assert '"spec"' in (run_dir / "spec.json").read_text()
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name]


def test_recording_twice_does_not_duplicate_metrics(study_store):
    store, _, variants, _ = study_store
    store.record(_result(variants[0].id))
    store.record(_result(variants[0].id))
    assert len(store.metrics(variants[0].id)) == 2


def test_resume_semantics(study_store):
    store, study, variants, path = study_store
    a, b, c, d = (v.id for v in variants)
    store.record(_result(a))
    store.record(_result(b, status="diverged"))
    store.mark_running(c)  # a driver died while c ran
    store.record(RunResult(d, "failed", error="Traceback ...\nValueError: boom"))
    assert store.run_ids_to_do() == [c, d]  # done and diverged are kept; the rest runs again
    store.sync_study(study, str(path), variants)  # a rerun re-syncs: statuses are kept
    assert store.status_counts() == {"done": 1, "diverged": 1, "running": 1, "failed": 1}
    store.mark_pending([c])
    assert store.status_counts()["pending"] == 1
    assert "ValueError: boom" in store.failures().error.iloc[0]  # failure history survives a retry


def test_changed_study_keeps_old_runs_out_of_the_frames(study_store, write_study):
    store, _, variants, _ = study_store
    store.record(_result(variants[0].id))
    path = write_study(tiny_study(grid={"optimizer.lr": [0.5]}), "changed.yaml")
    study2 = load_study(path)
    v2 = expand(study2, str(path))
    store.sync_study(study2, str(path), v2)
    assert store.runs().run.tolist() == [v.id for v in v2]
    assert store.metrics().empty
    assert variants[0].id in store.runs(all_runs=True).run.tolist()  # nothing recorded is lost


def test_open_errors(tmp_path):
    with pytest.raises(StoreError, match="not an ablab results directory"):
        Store.open(tmp_path)
    (tmp_path / "ablab.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="damaged"):
        Store.open(tmp_path)


def test_record_of_unknown_run_is_refused(study_store):
    store, *_ = study_store
    with pytest.raises(StoreError):
        store.record(_result("0000000000000000"))


def test_metrics_are_transactional_with_status(study_store, monkeypatch):
    store, _, variants, _ = study_store
    bad = _result(variants[0].id)
    bad.metrics.append((1, 1, "test", "accuracy", "not-a-number-and-not-null", ))  # type: ignore[arg-type]
    bad.metrics.append(("x",))  # malformed row: the insert fails inside the transaction
    with pytest.raises((ValueError, sqlite3.Error)):
        store.record(bad)
    assert store.metrics(variants[0].id).empty
    assert store.runs().set_index("run").loc[variants[0].id].status == "pending"
