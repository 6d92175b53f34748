"""Store and disk failures: one message naming the path (exit 2 bad input, 74 I/O); readers change no file."""

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

import ablab
import ablab.store.database
import ablab.store.layout
from ablab.cli import EXIT_BAD_INPUT, EXIT_IO_ERROR, main
from ablab.store import Store
from conftest import same_metrics, stored, tiny_study


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A finished two-run study (spec file, results directory), written once and copied by each test."""
    import yaml

    root = tmp_path_factory.mktemp("reference")
    spec = root / "study.yaml"
    spec.write_text(yaml.safe_dump(tiny_study()))
    assert main(["run", str(spec), "--out", str(root / "results")]) == 0
    return spec, root / "results"


@pytest.fixture
def results(reference, tmp_path):
    """A private copy of the reference results directory."""
    copy = tmp_path / "results"
    shutil.copytree(reference[1], copy)
    return copy


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _one_error(err: str) -> str:
    """The single error line, last on stderr (a run's progress lines may precede it)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == [lines[-1]] and lines[-1].startswith("error: "), err
    return lines[-1]


def _files(folder: Path) -> dict:
    """Every file under ``folder`` except the report: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and "report" not in p.relative_to(folder).parts}


def _wal_files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(("-wal", "-shm", "-journal")))


# ---- item 6: readers never change a file


def test_status_report_and_load_change_no_file_of_an_older_store(results, capsys):
    # a store of an earlier version (no origin column, no directions table): opening it to write would migrate it
    con = sqlite3.connect(results / "ablab.db")
    con.execute("ALTER TABLE runs DROP COLUMN origin_json")
    con.execute("DROP TABLE directions")
    con.commit()
    con.close()
    before = _files(results)
    assert _wal_files(results) == []
    code, err = _cli(capsys, "status", results)
    assert code == 0, err
    code, err = _cli(capsys, "report", results)
    assert code == 0, err
    store = ablab.load(results)
    assert sorted(store.runs().status) == ["done", "done"] and not store.metrics().empty
    store.close()
    assert (results / "report" / "index.html").is_file()
    assert _files(results) == before
    assert _wal_files(results) == []


def test_read_only_open_creates_no_wal_or_shm_file(results):
    before = _files(results)
    store = Store.open(results, readonly=True)
    assert len(store.runs()) == 2
    store.close()
    assert _wal_files(results) == [] and _files(results) == before


def test_reader_sees_the_commits_of_a_live_writer(results, reference):
    writer = Store.create(results)
    run = writer.runs().run.iloc[0]
    writer.mark_running(run)  # committed to the -wal file, not yet to the main file
    try:
        assert (results / "ablab.db-wal").exists()
        reader = Store.open(results, readonly=True)
        assert reader.run_status(run) == "running"
        reader.close()
    finally:
        writer.close()


def test_status_of_an_empty_database_file_leaves_it_empty(tmp_path, capsys):
    (tmp_path / "ablab.db").write_bytes(b"")
    code, err = _cli(capsys, "status", tmp_path)
    assert code == EXIT_BAD_INPUT
    line = _one_error(err)
    assert str(tmp_path / "ablab.db") in line and "empty" in line
    assert (tmp_path / "ablab.db").read_bytes() == b"" and _wal_files(tmp_path) == []


# ---- item 5: store and disk errors are one message and exit 2 or 74


def _truncated(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: 2 * 4096])


def _garbage(db: Path) -> None:
    db.write_bytes(b"definitely not sqlite " * 500)


def _header_overwritten(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:16] = b"X" * 16
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncated, _garbage, _header_overwritten])
@pytest.mark.parametrize("command", ["status", "report", "run"])
def test_a_damaged_database_is_one_io_error(damage, command, results, reference, capsys):
    db = results / "ablab.db"
    damage(db)
    before = db.read_bytes()
    argv = ["run", reference[0], "--out", results] if command == "run" else [command, results]
    code, err = _cli(capsys, *argv)
    assert code == EXIT_IO_ERROR, err
    line = _one_error(err)
    assert str(db) in line and "restore it from a copy" in line
    assert db.read_bytes() == before


@pytest.mark.parametrize("command", ["status", "report", "run"])
def test_a_directory_named_ablab_db_is_bad_input(command, tmp_path, reference, capsys):
    (tmp_path / "res" / "ablab.db").mkdir(parents=True)
    argv = ["run", reference[0], "--out", tmp_path / "res"] if command == "run" else [command, tmp_path / "res"]
    code, err = _cli(capsys, *argv)
    assert code == EXIT_BAD_INPUT
    line = _one_error(err)
    assert str(tmp_path / "res" / "ablab.db") in line and "is a directory" in line
    assert list((tmp_path / "res" / "ablab.db").iterdir()) == []


def test_out_naming_a_file_is_bad_input(tmp_path, reference, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, err = _cli(capsys, "run", reference[0], "--out", target)
    assert code == EXIT_BAD_INPUT
    assert str(target) in _one_error(err) and "not a folder" in err
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_read_only_results_directory_is_one_io_error(results, reference, capsys, monkeypatch):
    # tests run as root, who ignores permissions: refuse the way a read-only folder refuses a non-root user
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if Path(path).parent == results:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    before = _files(results)
    code, err = _cli(capsys, "run", reference[0], "--out", results)
    assert code == EXIT_IO_ERROR
    line = _one_error(err)
    assert str(results) in line and "cannot write here" in line and "--out" in line
    monkeypatch.undo()
    assert _files(results) == before


def _unfinished(results):
    """Forget the stored results of both runs (files, metrics, statuses); returns their ids."""
    ids = list(stored(results)[1].run)
    for run in ids:
        shutil.rmtree(results / "runs" / run)
    con = sqlite3.connect(results / "ablab.db")
    con.execute("DELETE FROM metrics")
    con.execute("DELETE FROM artifacts")
    con.execute("UPDATE runs SET status='pending'")
    con.commit()
    con.close()
    return ids


def test_disk_full_in_an_artifact_write_is_one_io_error_and_the_rerun_completes(results, reference, capsys, monkeypatch):
    spec, ref_dir = reference
    ids = _unfinished(results)
    real_write = ablab.store.layout.write_atomic

    def full_on_second_run(path, data):
        if ids[1] in Path(path).parts:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(ablab.store.layout, "write_atomic", full_on_second_run)
    code, err = _cli(capsys, "run", spec, "--out", results)
    assert code == EXIT_IO_ERROR
    line = _one_error(err)
    assert str(results / "runs" / ids[1]) in line and "disk is full" in line and "No space left" in line
    metrics, runs = stored(results)
    # an I/O failure of the study charges no run: the one in flight is pending again, not failed
    assert runs.set_index("run").status.to_dict() == {ids[0]: "done", ids[1]: "pending"}
    assert set(metrics.run) == {ids[0]}

    monkeypatch.undo()
    code, err = _cli(capsys, "run", spec, "--out", results)
    assert code == 0, err
    metrics, runs = stored(results)
    assert set(runs.status) == {"done"}
    assert same_metrics(metrics, stored(ref_dir)[0])  # nothing lost, nothing duplicated, same numbers


class _FullDiskConnection:
    """A connection whose metric inserts fail as SQLite fails on a full disk."""

    def __init__(self, conn):
        self._conn = conn

    def executemany(self, sql, rows):
        if sql.startswith("INSERT INTO metrics"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __enter__(self):
        return self._conn.__enter__()

    def __exit__(self, *exc):
        return self._conn.__exit__(*exc)


def test_database_full_in_a_commit_is_one_io_error_and_stores_no_half_run(results, reference, capsys, monkeypatch):
    spec, _ = reference
    ids = _unfinished(results)
    real_connect = ablab.store.database._connect
    monkeypatch.setattr(ablab.store.database, "_connect", lambda db, readonly=False: _FullDiskConnection(real_connect(db, readonly)))
    code, err = _cli(capsys, "run", spec, "--out", results)
    assert code == EXIT_IO_ERROR
    line = _one_error(err)
    assert str(results / "ablab.db") in line and "disk is full" in line
    monkeypatch.undo()
    metrics, runs = stored(results)
    assert metrics.empty  # the failed transaction left no metric row
    assert runs.set_index("run").status.to_dict() == {ids[0]: "pending", ids[1]: "pending"}  # nothing charged


# ---- issue 26: a damaged schema is never made again over stored runs; creation is atomic; readers last


@pytest.mark.parametrize("table", ["metrics", "artifacts"])
@pytest.mark.parametrize("command", ["run", "status", "export"])
def test_a_dropped_table_is_one_io_error_and_never_made_again(table, command, results, reference, capsys):
    con = sqlite3.connect(results / "ablab.db")
    con.execute(f"DROP TABLE {table}")
    con.commit()
    con.close()
    argv = ["run", reference[0], "--out", results] if command == "run" else [command, results]
    code, err = _cli(capsys, *argv)
    assert code == EXIT_IO_ERROR, err
    line = _one_error(err)
    assert str(results / "ablab.db") in line and f"table '{table}' is missing" in line
    con = sqlite3.connect(results / "ablab.db")
    assert con.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone() is None
    con.close()


def test_a_foreign_table_in_a_store_is_one_io_error(results, reference, capsys):
    con = sqlite3.connect(results / "ablab.db")
    con.execute("DROP TABLE metrics")
    con.execute("CREATE TABLE metrics(a, b)")
    con.commit()
    con.close()
    code, err = _cli(capsys, "run", reference[0], "--out", results)
    assert code == EXIT_IO_ERROR, err
    line = _one_error(err)
    assert str(results / "ablab.db") in line and "table 'metrics' is not ablab's" in line


def test_a_full_disk_while_the_store_is_made_leaves_none_and_the_rerun_makes_it(tmp_path, reference, capsys,
                                                                               monkeypatch):
    real_connect = sqlite3.connect

    class FullMidway(sqlite3.Connection):
        """Runs the schema up to the runs table, then fails as a full disk does."""

        def executescript(self, script):
            head, sep, _ = script.partition("CREATE TABLE IF NOT EXISTS runs(")
            if not sep:
                return super().executescript(script)
            super().executescript(head)
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, **k, factory=FullMidway))
    out = tmp_path / "results"
    code, err = _cli(capsys, "run", reference[0], "--out", out)
    assert code == EXIT_IO_ERROR, err
    assert "the disk is full" in _one_error(err)
    monkeypatch.undo()
    assert not (out / "ablab.db").exists()
    code, err = _cli(capsys, "run", reference[0], "--out", out)
    assert code == 0, err
    assert sorted(stored(out)[1].status) == ["done", "done"]
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name] == []


def test_a_reader_opened_on_an_idle_store_reads_on_after_the_study_is_extended(results, reference, tmp_path, capsys):
    import yaml

    reader = ablab.load(results)
    assert len(reader.runs()) == 2 and len(reader.metrics()) > 0
    spec = tmp_path / "more.yaml"
    spec.write_text(yaml.safe_dump(tiny_study(seeds={"replicates": 3})))
    code, err = _cli(capsys, "run", spec, "--out", results)
    assert code == 0, err
    try:
        runs = reader.runs()
        assert len(runs) == 3 and list(runs.status) == ["done"] * 3
        assert set(reader.metrics().run) == set(runs.run)
    finally:
        reader.close()
    assert _wal_files(results) == []


@pytest.mark.parametrize("code", [errno.ELOOP, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST])
def test_a_path_that_is_not_what_ablab_needs_is_bad_input_not_a_disk_failure(code):
    from ablab.errors import StoreError, StoreIOError
    from ablab.store.errors import io_error

    err = io_error("some/path", OSError(code, os.strerror(code), "some/path"))
    assert isinstance(err, StoreError) and not isinstance(err, StoreIOError)
    assert str(err).startswith("some/path: ") and "disk" not in str(err).split("(")[0]
    assert isinstance(io_error("some/path", OSError(errno.ENOSPC, "No space left on device")), StoreIOError)


# ---- issue 26: a reader leaves a damaged store's folder as it found it


def _listing(folder: Path) -> list[str]:
    """The names in ``folder`` (the report's own folder aside)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "report")


def _read_with(command: str, results: Path, capsys) -> int:
    """Read the store as ``command`` does; its exit code (``load``: 74 where the reading raised StoreIOError)."""
    if command in ("status", "report"):
        code, err = _cli(capsys, command, results)
        assert code in (0, EXIT_IO_ERROR), err
        if code:
            _one_error(err)
        return code
    from ablab.errors import StoreIOError

    try:
        store = ablab.load(results)
    except StoreIOError:
        return EXIT_IO_ERROR
    try:
        store.runs(), store.metrics()
        return 0
    except StoreIOError:
        return EXIT_IO_ERROR
    finally:
        if command == "load":
            store.close()
        else:  # left open, then dropped (a script that never closes it)
            del store
            import gc

            gc.collect()


@pytest.mark.parametrize("command", ["status", pytest.param("report", marks=pytest.mark.slow), "load", "load-unclosed"])
def test_a_reader_of_a_deep_damaged_store_leaves_its_folder_as_it_found_it(command, results, capsys):
    """Damage past the header is met only while reading, after the open made the -wal/-shm files: they must
    go again (SQLite's closing checkpoint fails on such a store and left them, empty), with one message."""
    db = results / "ablab.db"
    intact = db.read_bytes()
    page = 4096
    met = 0
    for n in range(1, len(intact) // page):  # page 0 holds the header: refused before any open (above)
        db.write_bytes(intact[: n * page] + b"\x0d" * page + intact[(n + 1) * page:])
        before = _listing(results)
        met += _read_with(command, results, capsys) == EXIT_IO_ERROR
        assert _listing(results) == before, f"page {n} damaged"
    assert met > 0  # some damage was met while reading: the deep case
