"""The database of a results directory: schema, connections, migrations and the writer's transactions.

``ablab.db`` holds the study, its runs (status, resolved spec, code version), their metrics, the
artifact index (run, name, kind, epoch, split, size, sha256) and the metrics' directions; the
files lie beside it (``ablab.store.layout``). Only the driver writes. Workers write artifact files
into the staging folder; the driver moves them into ``runs/<id>/`` and then records them, the run's
metrics and its final status in one transaction, so a killed study never holds half a run:
unfinished runs are simply run again, and their leftover files (staged or moved) are removed when
the study starts again.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any, Iterable

from ablab import version
from ablab.version import PROTOCOL_VERSION
from ablab.errors import StoreError, StoreIOError
from ablab.files import temp_path
from ablab.store import layout
from ablab.store.errors import failing_as_io
from ablab.store.layout import DB_NAME, require_results_path, require_store_file
from ablab.store.reader import FINAL, StoreReader

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS study(
    name TEXT PRIMARY KEY, file TEXT, description TEXT, spec_json TEXT NOT NULL,
    report_json TEXT NOT NULL, code_version TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS runs(
    id TEXT PRIMARY KEY, label TEXT NOT NULL, replicate INTEGER NOT NULL, axes_json TEXT NOT NULL,
    spec_json TEXT NOT NULL, status TEXT NOT NULL, code_version TEXT, error TEXT, device TEXT,
    started REAL, finished REAL, duration_s REAL, attempts INTEGER NOT NULL DEFAULT 0, info_json TEXT);
CREATE TABLE IF NOT EXISTS study_runs(position INTEGER PRIMARY KEY, run TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics(
    run TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL, split TEXT NOT NULL,
    name TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics(run);
CREATE TABLE IF NOT EXISTS failures(run TEXT NOT NULL, at REAL NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS artifacts(
    run TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, epoch INTEGER, split TEXT,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (run, name));
CREATE TABLE IF NOT EXISTS directions(name TEXT PRIMARY KEY, direction TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replaced_studies(
    name TEXT PRIMARY KEY, file TEXT, description TEXT, spec_json TEXT NOT NULL,
    report_json TEXT NOT NULL, code_version TEXT, updated REAL, replaced REAL NOT NULL, replaced_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replaced_study_runs(
    study TEXT NOT NULL, position INTEGER NOT NULL, run TEXT NOT NULL, PRIMARY KEY (study, position));
"""


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """ablab's version plus a hash of its source files, so every result names the code behind it."""
    root = Path(version.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{version.__version__}+{h.hexdigest()[:12]}"


class Store(StoreReader):
    """One study directory. ``Store.open(path)`` to read, ``Store.create(path)`` to write."""

    # ---- opening

    @classmethod
    def create(cls, path: str | Path) -> "Store":
        """The store in ``path`` to write, made if missing; one clear error when the path or disk refuses.

        A new store is built whole under a temporary name and then linked into place, so a full disk
        while it is made leaves no half-made ``ablab.db`` behind (the next call makes it again)."""
        path = Path(path)
        db = path / DB_NAME
        require_results_path(path)
        with failing_as_io(path):
            path.mkdir(parents=True, exist_ok=True)
        if not db.exists() or (db.is_file() and db.stat().st_size == 0):
            with failing_as_io(db):
                db.unlink(missing_ok=True)  # an empty file holds nothing: the store is made in its place
                _create_atomically(db)
        require_store_file(path)
        with failing_as_io(db):
            conn = _connect(db)
            try:
                _check_is_store(db, conn)
                _check_schema(db, conn)
                with conn:
                    conn.executescript(_SCHEMA)  # tables added since the store was written
                _migrate(conn)
            except BaseException:
                conn.close()
                raise
        return cls(path, conn)

    @classmethod
    def open(cls, path: str | Path, readonly: bool = True) -> "Store":
        """An existing store; read-only by default, which never changes a file (``readonly=False`` migrates)."""
        path = Path(path)
        db = path / DB_NAME
        require_store_file(path)
        tidy = readonly and _writable_folder(path) and not _wal_files_exist(db)
        if tidy:
            _probe(db)  # a foreign or damaged file is refused before the reader's open makes any file
        with failing_as_io(db):
            conn = _connect(db, readonly=readonly)
            try:
                _check_is_store(db, conn)
                _check_schema(db, conn)
                if not readonly:
                    with conn:
                        conn.executescript(_SCHEMA)  # tables added since the store was written
                    _migrate(conn)
            except BaseException:
                conn.close()
                if tidy:
                    _remove_reader_wal_files(db)
                raise
        store = cls(path, conn)
        # a reader left open (``ablab.load`` in a script) is closed, and tidied, when collected or at exit
        store._closer = weakref.finalize(store, _close_reader, conn, db, tidy) if readonly else None
        return store

    def close(self) -> None:
        """Close the connection; a reader removes the ``-wal``/``-shm`` files its open made (when no one else uses them)."""
        if getattr(self, "_closer", None) is not None:
            self._closer()
        else:
            super().close()

    # ---- writing (driver only)

    def sync_study(self, study: Any, file: str, variants: list[Any]) -> None:
        """Record the study and its runs; runs already stored keep their status and results.

        A study of another name replaces the current one, which stays readable as a replaced study
        (``study(name)``, ``runs(study=name)``); the caller asks first (``--replace``)."""
        version = code_version()
        with failing_as_io(self.db), self._conn:
            self._archive_current_study(unless=study.name)
            self._conn.execute("DELETE FROM replaced_study_runs WHERE study=?", (study.name,))
            self._conn.execute("DELETE FROM replaced_studies WHERE name=?", (study.name,))
            self._conn.execute("DELETE FROM study")
            self._conn.execute(
                "INSERT INTO study VALUES (?,?,?,?,?,?,?)",
                (study.name, file, study.description, study.model_dump_json(),
                 study.report.model_dump_json(), version, time.time()),
            )
            self._conn.executemany(
                "INSERT INTO runs(id, label, replicate, axes_json, spec_json, status, code_version, origin_json) "
                "VALUES (?,?,?,?,?, 'pending', ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "label=excluded.label, axes_json=excluded.axes_json, origin_json=excluded.origin_json",
                [(v.id, v.label, v.replicate, json.dumps(v.axes, sort_keys=True, default=str),
                  v.spec.canonical_json(), version, json.dumps(getattr(v, "origin", {}) or {}, sort_keys=True, default=str))
                 for v in variants],
            )
            self._conn.execute("DELETE FROM study_runs")
            self._conn.executemany("INSERT INTO study_runs VALUES (?,?)", list(enumerate(v.id for v in variants)))

    def _archive_current_study(self, unless: str) -> None:
        """Copy the current study (definition and run list) to the replaced studies, unless it is ``unless``."""
        row = self._conn.execute("SELECT name FROM study").fetchone()
        if row is None or row[0] == unless:
            return
        self._conn.execute("DELETE FROM replaced_study_runs WHERE study=?", (row[0],))
        self._conn.execute("INSERT OR REPLACE INTO replaced_studies SELECT name, file, description, spec_json, "
                           "report_json, code_version, updated, ?, ? FROM study", (time.time(), unless))
        self._conn.execute("INSERT INTO replaced_study_runs SELECT ?, position, run FROM study_runs", (row[0],))

    def mark_running(self, run_id: str) -> None:
        with failing_as_io(self.db), self._conn:
            self._conn.execute(
                "UPDATE runs SET status='running', started=?, attempts=attempts+1 WHERE id=?",
                (time.time(), run_id),
            )

    def mark_pending(self, run_ids: Iterable[str], uncount: bool = False) -> None:
        """Runs interrupted before a result came back run again next time (``uncount``: and their
        last start is taken back from ``attempts``: it ended through no fault of theirs)."""
        attempts = "attempts - 1" if uncount else "attempts"
        with failing_as_io(self.db), self._conn:
            self._conn.executemany(
                f"UPDATE runs SET status='pending', attempts=MAX(0, {attempts}) WHERE id=? AND status='running'",
                [(r,) for r in run_ids],
            )

    def staging_dir(self, run_id: str) -> Path:
        """Where a worker writes the artifact files of ``run_id`` before the driver stores them."""
        return layout.staging_dir(self.path, run_id)

    def prepare_staging(self) -> None:
        """Remove what a killed or failed invocation left: ``running`` statuses, staging, files of runs not stored.

        Called under the study lock, so no run is really running: a ``running`` row was left by an
        invocation that died (killed, disk full) and goes back to ``pending``. A run without a final
        status has no artifacts in the database; any file in its folder came from an interrupted
        commit and is removed (it is written again when the run reruns).
        """
        with failing_as_io(self.db), self._conn:
            self._conn.execute("UPDATE runs SET status='pending' WHERE status='running'")
        layout.reset_staging(self.path)
        unfinished = {r[0] for r in self._conn.execute("SELECT id FROM runs WHERE status NOT IN (?, ?)", FINAL)}
        layout.remove_run_dirs(self.path, unfinished)

    def remove_staging(self) -> None:
        layout.remove_staging(self.path)

    def note_temp_dir(self, path: str | Path) -> None:
        """A temporary folder this driver made elsewhere: the next invocation removes it if the driver was killed."""
        layout.note_temp_dir(self.path, path)

    def record(self, result: Any) -> None:
        """Store a finished run (a ``RunResult``): artifact files moved into place first, then their index,
        the metrics and the status in one transaction (a kill in between leaves files that the next start removes)."""
        spec_json = self._conn.execute("SELECT spec_json FROM runs WHERE id=?", (result.run_id,)).fetchone()
        if spec_json is None:
            raise StoreError(f"run {result.run_id} is not part of this study")
        records = result.artifacts.records() if hasattr(result.artifacts, "records") else []
        layout.place_run_files(self.path, result.run_id,
                               {"spec": json.loads(spec_json[0]), "code_version": code_version()}, records)
        with failing_as_io(self.db), self._conn:
            self._conn.execute("DELETE FROM metrics WHERE run=?", (result.run_id,))
            self._conn.execute("DELETE FROM artifacts WHERE run=?", (result.run_id,))
            self._conn.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?,?)",
                [(result.run_id, s, e, sp, n, v) for (s, e, sp, n, v) in result.metrics],
            )
            self._conn.executemany(
                "INSERT INTO artifacts VALUES (?,?,?,?,?,?,?)",
                [(result.run_id, a.name, a.kind, a.epoch, a.split, a.size, a.sha256) for a in records],
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO directions VALUES (?,?)", sorted((getattr(result, "directions", None) or {}).items())
            )
            if result.status == "failed":
                self._conn.execute("INSERT INTO failures VALUES (?,?,?)", (result.run_id, time.time(), result.error))
            self._conn.execute(
                "UPDATE runs SET status=?, error=?, device=?, started=?, finished=?, duration_s=?, "
                "code_version=?, info_json=? WHERE id=?",
                (result.status, result.error, result.device, result.started, time.time(),
                 result.duration_s, code_version(), json.dumps(result.info), result.run_id),
            )
        layout.remove_staging(self.path, result.run_id)


def _migrate(conn: sqlite3.Connection) -> None:
    """Stores written by earlier versions gain the columns added since."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    if "origin_json" not in cols:
        with conn:
            conn.execute("ALTER TABLE runs ADD COLUMN origin_json TEXT")


def _check_is_store(db: Path, conn: sqlite3.Connection) -> None:
    """Reading the runs table proves an ablab store; an SQLite file without it is someone else's (bad input)."""
    try:
        conn.execute("SELECT 1 FROM runs LIMIT 1")
    except sqlite3.OperationalError as err:
        if "no such table" not in str(err):
            raise
        raise StoreError(f"{db}: an SQLite database but not an ablab store (no runs table); "
                         "name a results directory written by 'ablab run', or move this file away") from None


# tables every store has held since the first version; stores written since runs gained ``origin_json``
# (the engine) also hold the artifact index and the metrics' directions
_CORE_TABLES = ("meta", "study", "runs", "study_runs", "metrics", "failures")
_ENGINE_TABLES = ("artifacts", "directions")
_MIGRATED_COLUMNS = {"runs": {"origin_json"}}


@functools.lru_cache(maxsize=1)
def _schema_columns() -> dict[str, set[str]]:
    """Each table of ``_SCHEMA`` and its columns (those added by ``_migrate`` left out)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} - _MIGRATED_COLUMNS.get(t, set())
                for t in tables}
    finally:
        conn.close()


def _check_schema(db: Path, conn: sqlite3.Connection) -> None:
    """A store missing one of its tables, or holding a table of that name with other columns, is damaged
    (exit 74): it is never made again over the runs it holds, which would lose their results."""
    columns = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in _schema_columns()}
    required = list(_CORE_TABLES)
    if "origin_json" in columns["runs"]:
        required += _ENGINE_TABLES
    expected = _schema_columns()
    for table in expected:
        have = columns[table]
        if not have and table in required:
            raise StoreIOError(f"{db}: the results database is damaged: its table '{table}' is missing; restore "
                               "ablab.db from a copy, or move the directory away and run the study again "
                               "(its runs are then trained again)")
        if have and not expected[table] <= have:
            missing = ", ".join(sorted(expected[table] - have))
            raise StoreIOError(f"{db}: the results database is damaged: its table '{table}' is not ablab's "
                               f"(no column {missing}); restore ablab.db from a copy, or move the directory "
                               "away and run the study again (its runs are then trained again)")


def _create_atomically(db: Path) -> None:
    """Make a new, empty store with its whole schema under a temporary name, then link it into place.

    A failure midway (a full disk) removes the temporary file and leaves no ``ablab.db``; a store
    that another process made meanwhile is kept (the link refuses to replace it)."""
    tmp = temp_path(db)
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp)
        try:
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('protocol', ?)", (str(PROTOCOL_VERSION),))
            _migrate(conn)
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # made by another process meanwhile: that one is the store
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            os.rename(tmp, db)  # a filesystem without hard links
    finally:
        tmp.unlink(missing_ok=True)


def _probe(db: Path) -> None:
    """Check, through an immutable open that makes no file, that ``db`` is an SQLite ablab store with its tables."""
    with failing_as_io(db):
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            _check_is_store(db, conn)
            _check_schema(db, conn)
            conn.execute("SELECT COUNT(*) FROM runs").fetchone()
            conn.execute("SELECT COUNT(*) FROM study_runs").fetchone()
        finally:
            conn.close()


def _writable_folder(path: Path) -> bool:
    """This user may create files in ``path`` (so a reader's open may make the ``-wal``/``-shm`` files)."""
    return os.access(path, os.W_OK | os.X_OK)


def _wal_files_exist(db: Path) -> bool:
    return any(db.with_name(db.name + suffix).exists() for suffix in ("-wal", "-shm"))


def _close_reader(conn: sqlite3.Connection, db: Path, tidy: bool) -> None:
    """Close a reader's connection; with ``tidy`` (its open made the ``-wal``/``-shm`` files) remove them."""
    conn.close()
    if tidy:
        _remove_reader_wal_files(db)


def _remove_reader_wal_files(db: Path) -> None:
    """Let SQLite remove the ``-wal``/``-shm`` files a read-only open made: the last connection to close
    a WAL database deletes them, and a read-only one cannot; SQLite leaves them while anyone else has it open.
    On a damaged store SQLite's closing checkpoint fails and leaves them: ``_remove_unused_empty_wal``."""
    with contextlib.suppress(sqlite3.Error, OSError):
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=0)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        finally:
            conn.close()
    _remove_unused_empty_wal(db)


# SQLite's locks on a database file (os_unix.c): every connection to a WAL database holds a shared lock
# on these bytes while it is open; an exclusive lock there means no connection has it open (wal.c,
# sqlite3WalClose, takes the same lock before it deletes the -wal file)
_SHARED_FIRST, _SHARED_SIZE = 0x40000000 + 2, 510


def _remove_unused_empty_wal(db: Path) -> None:
    """Remove ``-wal`` and ``-shm`` files that hold no commit (an empty ``-wal``) while no connection has
    ``db`` open, holding SQLite's exclusive lock meanwhile so that none opens it."""
    wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
    try:
        if wal.stat().st_size != 0:
            return
    except FileNotFoundError:
        if not shm.exists():
            return
    except OSError:
        return
    import fcntl  # Unix: the only systems whose SQLite locks are these

    with contextlib.suppress(OSError):
        fd = os.open(db, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST, os.SEEK_SET)
            if not wal.exists() or wal.stat().st_size == 0:
                wal.unlink(missing_ok=True)
                shm.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _connect_readonly(db: Path) -> sqlite3.Connection:
    """Open ``db`` to read without changing any of its content or creating a file that stays behind.

    Where the folder is writable the connection is a plain read-only one (``mode=ro``): it sees
    every commit of a writer, also one that starts later and extends or checkpoints the file (an
    immutable open would read those pages as "malformed"). It makes ``-wal`` and ``-shm`` files,
    which ``Store.close`` removes again. Only where the folder is not writable (a read-only medium)
    is the file opened as immutable; with a ``-wal`` file there the reader still tries to go through it.
    """
    uri = db.resolve().as_uri()
    if _writable_folder(db.parent) or db.with_name(db.name + "-wal").exists():
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            return conn
        except sqlite3.OperationalError:
            conn.close()
            if _writable_folder(db.parent):
                raise
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30)


def _connect(db: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return _connect_readonly(db)
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
