"""One study per results directory: another study's spec is refused unless --replace, and the replaced
study stays readable (``status --study NAME``, its runs in the store)."""

import hashlib

from ablab.cli import main
from ablab.store import Store
from conftest import stored, tiny_study


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_study_is_refused_without_replace_and_nothing_is_written(write_study, tmp_path, capsys):
    out = tmp_path / "r"
    first = write_study(tiny_study(seeds={"replicates": 1}))
    assert main(["run", str(first), "--out", str(out), "--threads", "1"]) == 0
    before = _digest(out / "ablab.db")
    other = write_study(tiny_study(name="other", seeds={"replicates": 1}, base={**tiny_study()["base"], "epochs": 1}))
    capsys.readouterr()
    assert main(["run", str(other), "--out", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"{out} holds study 'tiny' (1 runs), not 'other'" in err and "--replace" in err
    assert f"ablab status {out} --study tiny" in err
    assert _digest(out / "ablab.db") == before
    metrics, runs = stored(out)
    assert list(runs["status"]) == ["done"] and set(metrics["run"]) == set(runs["run"])


def test_the_same_study_with_more_seeds_or_variants_extends_without_replace(write_study, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(write_study(tiny_study(seeds={"replicates": 1}))), "--out", str(out), "--threads", "1"]) == 0
    _, one = stored(out)
    more = tiny_study(seeds={"replicates": 2}, grid={"optimizer.lr": [0.1, 0.05]})
    assert main(["run", str(write_study(more)), "--out", str(out), "--threads", "1"]) == 0
    _, runs = stored(out)
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    assert set(one["run"]) < set(runs["run"])  # the stored run was kept, not retrained under another id


def test_replace_switches_the_study_and_keeps_the_old_one_readable(write_study, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(write_study(tiny_study(seeds={"replicates": 2}))), "--out", str(out), "--threads", "1"]) == 0
    old_metrics, old_runs = stored(out)
    other = write_study(tiny_study(name="other", seeds={"replicates": 1}, base={**tiny_study()["base"], "epochs": 1}))
    assert main(["run", str(other), "--out", str(out), "--threads", "1", "--replace"]) == 0
    store = Store.open(out)
    try:
        assert store.study()["name"] == "other" and store.study_names() == ["other", "tiny"]
        assert store.study("tiny")["spec"]["base"]["epochs"] == 2
        kept = store.runs(study="tiny")
        assert list(kept["run"]) == list(old_runs["run"]) and set(kept["status"]) == {"done"}
        assert len(store.runs()) == 1 and store.runs()["run"].iloc[0] not in set(old_runs["run"])
        # the old runs' metrics are still stored, row for row
        all_metrics = store._conn.execute("SELECT COUNT(*) FROM metrics WHERE run IN (%s)"
                                          % ",".join("?" * len(old_runs)), list(old_runs["run"])).fetchone()[0]
        assert all_metrics == len(old_metrics)
    finally:
        store.close()
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"study 'other' in {out}: 1 runs") and "replaced studies: tiny" in text
    assert main(["status", str(out), "--study", "tiny"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"replaced study 'tiny' (current: 'other') in {out}: 2 runs: 2 done")
    assert all(r in text for r in old_runs["run"])
    assert main(["status", str(out), "--study", "nope"]) == 2
    assert "no replaced study 'nope' here; studies: other, tiny" in capsys.readouterr().err
    # back to the first study: again only with --replace, and its stored runs are not trained again
    first = write_study(tiny_study(seeds={"replicates": 2}))
    assert main(["run", str(first), "--out", str(out), "--threads", "1"]) == 2
    assert main(["run", str(first), "--out", str(out), "--threads", "1", "--replace"]) == 0
    metrics, runs = stored(out)
    assert list(runs["run"]) == list(old_runs["run"]) and len(metrics) == len(old_metrics)
    store = Store.open(out)
    try:
        assert store.study_names() == ["tiny", "other"]
    finally:
        store.close()
