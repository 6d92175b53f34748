"""The results store of one study directory: SQLite plus per-run artifact files.

Layout::

    results/<study>/ablab.db          studies, runs (status, resolved spec, code version), metrics,
                                       artifacts (run, name, kind, epoch, split, size, sha256)
    results/<study>/runs/<id>/...      artifact files (checkpoints, predictions, probe series)
    results/<study>/.staging/<id>/     where workers write a run's artifact files before it is stored
    results/<study>/report/            written by ``ablab report``

Only the driver writes. Workers write artifact files into the staging folder; the driver moves
them into ``runs/<id>/`` and then records them, the run's metrics and its final status in one
transaction, so a killed study never holds half a run: unfinished runs are simply run again, and
their leftover files (staged or moved) are removed when the study starts again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from ablab.version import PROTOCOL_VERSION
from ablab.errors import StoreError
from ablab.store_io import failing_as_io, io_error

if TYPE_CHECKING:
    from ablab.train.result import RunResult

DB_NAME = "ablab.db"
FINAL = ("done", "diverged")  # statuses a rerun keeps; everything else runs again

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
STAGING = ".staging"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """ablab's version plus a hash of its source files, so every result names the code behind it."""
    import hashlib

    from ablab import version

    root = Path(version.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{version.__version__}+{h.hexdigest()[:12]}"


LOCK_NAME = ".ablab-run.lock"
_HELD_LOCKS: set[int] = set()  # lock file descriptors of this process (a forked worker closes its copies)


def close_inherited_locks() -> None:
    """In a forked worker: close the driver's lock descriptors, so the lock dies with the driver alone."""
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


class StudyLock:
    """One writer per results directory: an exclusive ``flock`` on ``DIR/.ablab-run.lock``.

    The lock file names the holder (pid and host); the operating system releases the lock when the
    holder dies, however it dies, so a stale lock never blocks a new run. ``status`` and ``report``
    do not take it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "StudyLock":
        import fcntl
        import socket

        _require_directory(self.path.parent)
        with failing_as_io(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(f"{self.path.parent}: another 'ablab run' is writing this study ({holder}); "
                             "wait for it to finish or stop it, then run again") from None
        try:
            with failing_as_io(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except StoreError:
            os.close(fd)
            raise
        self._fd = fd
        _HELD_LOCKS.add(fd)
        return self

    def release(self) -> None:
        if self._fd is not None:
            _HELD_LOCKS.discard(self._fd)
            os.close(self._fd)  # closing releases the lock; the file stays, empty of meaning
            self._fd = None

    def __enter__(self) -> "StudyLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over it.

    A failed write (a full disk) removes its temporary file; one left by a kill is removed by
    ``remove_stale_temp_files`` when the study runs again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMP_NAME = re.compile(r"\..+\.tmp-(\d+)")  # write_atomic's temporary names: .NAME.tmp-PID


def remove_stale_temp_files(root: str | Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID`` files under ``root`` whose writer PID is dead (a kill mid-write); returns them.

    Files of live processes stay: ``ablab report`` may be writing while a run starts. Symbolic
    links are not followed, so nothing outside ``root`` is touched.
    """
    removed = []
    for folder, _, names in os.walk(root):
        for name in names:
            match = _TEMP_NAME.fullmatch(name)
            if match and not _pid_alive(int(match.group(1))):
                path = Path(folder) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    """A process ``pid`` exists on this machine (signal 0 checks without sending anything)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return True  # not a process id: os.kill would address a process group; leave the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False  # larger than any pid
    return True


class Store:
    """One study directory. ``Store.open(path)`` to read, ``Store.create(path)`` to write."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    # ---- opening

    @classmethod
    def create(cls, path: str | Path) -> "Store":
        """The store in ``path`` to write, made if missing; one clear error when the path or disk refuses."""
        path = Path(path)
        db = path / DB_NAME
        require_results_path(path)
        with failing_as_io(path):
            path.mkdir(parents=True, exist_ok=True)
        with failing_as_io(db):
            conn = _connect(db)
            try:
                with conn:
                    conn.executescript(_SCHEMA)
                    conn.execute("INSERT OR IGNORE INTO meta VALUES ('protocol', ?)", (str(PROTOCOL_VERSION),))
                store = cls(path, conn)
                store._migrate()
            except BaseException:
                conn.close()
                raise
        return store

    @classmethod
    def open(cls, path: str | Path, readonly: bool = True) -> "Store":
        """An existing store; read-only by default, which never changes a file (``readonly=False`` migrates)."""
        path = Path(path)
        db = path / DB_NAME
        _require_store_file(path, db)
        with failing_as_io(db):
            conn = _connect(db, readonly=readonly)
            try:
                _check_is_store(db, conn)
                store = cls(path, conn)
                if not readonly:
                    with conn:
                        conn.executescript(_SCHEMA)  # tables added since the store was written
                    store._migrate()
            except BaseException:
                conn.close()
                raise
        return store

    def _migrate(self) -> None:
        """Stores written by earlier versions gain the columns added since."""
        cols = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}
        if "origin_json" not in cols:
            with self._conn:
                self._conn.execute("ALTER TABLE runs ADD COLUMN origin_json TEXT")

    @property
    def db(self) -> Path:
        return self.path / DB_NAME

    def close(self) -> None:
        self._conn.close()

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
        return self.path / STAGING / run_id

    def prepare_staging(self) -> None:
        """Remove what a killed or failed invocation left: ``running`` statuses, staging, files of runs not stored.

        Called under the study lock, so no run is really running: a ``running`` row was left by an
        invocation that died (killed, disk full) and goes back to ``pending``. A run without a final
        status has no artifacts in the database; any file in its folder came from an interrupted
        commit and is removed (it is written again when the run reruns).
        """
        with failing_as_io(self.db), self._conn:
            self._conn.execute("UPDATE runs SET status='pending' WHERE status='running'")
        shutil.rmtree(self.path / STAGING, ignore_errors=True)
        with failing_as_io(self.path / STAGING):
            (self.path / STAGING).mkdir(parents=True, exist_ok=True)
        unfinished = {r[0] for r in self._conn.execute("SELECT id FROM runs WHERE status NOT IN (?, ?)", FINAL)}
        runs_dir = self.path / "runs"
        if runs_dir.is_dir():
            for run_dir in runs_dir.iterdir():
                if run_dir.name in unfinished and run_dir.is_dir():
                    shutil.rmtree(run_dir, ignore_errors=True)

    def remove_staging(self) -> None:
        shutil.rmtree(self.path / STAGING, ignore_errors=True)

    def record(self, result: "RunResult") -> None:
        """Store a finished run: artifact files moved into place first, then their index, the metrics and
        the status in one transaction (a kill in between leaves files that the next start removes)."""
        run_dir = self.path / "runs" / result.run_id
        spec_json = self._conn.execute("SELECT spec_json FROM runs WHERE id=?", (result.run_id,)).fetchone()
        if spec_json is None:
            raise StoreError(f"run {result.run_id} is not part of this study")
        with failing_as_io(run_dir / "spec.json"):
            write_atomic(run_dir / "spec.json", json.dumps(
                {"spec": json.loads(spec_json[0]), "code_version": code_version()}, indent=2).encode())
        records = result.artifacts.records() if hasattr(result.artifacts, "records") else []
        for art in records:
            target = run_dir / art.name
            with failing_as_io(target):
                if art.path is not None and Path(art.path).is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(art.path, target)
                else:
                    write_atomic(target, art.read())
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
        shutil.rmtree(self.staging_dir(result.run_id), ignore_errors=True)

    # ---- reading

    def study(self, name: str | None = None) -> dict[str, Any]:
        """The current study's definition, or that of the replaced study ``name``."""
        columns = "name, file, description, spec_json, report_json, code_version"
        if name is None:
            row = self._conn.execute(f"SELECT {columns} FROM study").fetchone()
            if row is None:
                raise StoreError(f"{self.path}: the store holds no study yet")
        else:
            row = self._conn.execute(f"SELECT {columns} FROM replaced_studies WHERE name=?", (name,)).fetchone() \
                if self._has_table("replaced_studies") else None
            if row is None:
                raise StoreError(f"{self.path}: no replaced study '{name}' here; "
                                 f"studies: {', '.join(self.study_names()) or 'none'}")
        name, file, description, spec_json, report_json, version = row
        return {
            "name": name, "file": file, "description": description, "spec": json.loads(spec_json),
            "report": json.loads(report_json), "code_version": version,
        }

    def study_names(self) -> list[str]:
        """The current study's name first, then the studies it replaced, most recently replaced first."""
        names = [r[0] for r in self._conn.execute("SELECT name FROM study")]
        if self._has_table("replaced_studies"):
            names += [r[0] for r in self._conn.execute("SELECT name FROM replaced_studies ORDER BY replaced DESC")]
        return names

    def runs(self, all_runs: bool = False, study: str | None = None) -> pd.DataFrame:
        """One row per run of the current study (``all_runs``: also runs of earlier versions of it;
        ``study``: the runs of that replaced study instead)."""
        if study is None:
            listing, params = "study_runs", ()
        else:
            self.study(study)  # one clear error for an unknown name
            listing, params = "(SELECT position, run FROM replaced_study_runs WHERE study = ?)", (study,)
        query = (
            "SELECT r.id AS run, r.label, r.replicate, r.status, r.axes_json, r.spec_json, r.error, "
            "r.duration_s, r.device, r.code_version, r.started, r.finished, r.attempts, r.info_json, {origin}, "
            "s.position FROM runs r {join} {listing} s ON s.run = r.id ORDER BY s.position, r.id"
        ).format(join="LEFT JOIN" if all_runs else "JOIN", listing=listing,
                 origin="r.origin_json" if self._has_origin() else "NULL AS origin_json")
        df = pd.read_sql_query(query, self._conn, params=params)
        df["origin"] = df.pop("origin_json").map(lambda v: json.loads(v) if isinstance(v, str) else {})
        df["axes"] = df.pop("axes_json").map(json.loads)
        df["spec"] = df.pop("spec_json").map(json.loads)
        df["info"] = df.pop("info_json").map(lambda v: json.loads(v) if isinstance(v, str) else {})
        df["in_study"] = df.pop("position").notna()
        return df

    def _has_origin(self) -> bool:
        return "origin_json" in {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}

    def metrics(self, run: str | None = None, with_axes: bool = False) -> pd.DataFrame:
        """Long-format metrics ``(run, step, epoch, split, name, value)`` of the study's runs.

        ``with_axes``: also ``label``, ``replicate``, ``status`` and one column per axis path, so a plot
        needs no merge (see ``with_run_columns``).
        """
        frame = self._metrics(run)
        return with_run_columns(frame, self.runs()) if with_axes else frame

    def _metrics(self, run: str | None = None) -> pd.DataFrame:
        query = "SELECT m.run, m.step, m.epoch, m.split, m.name, m.value FROM metrics m JOIN study_runs s ON s.run = m.run"
        params: tuple = ()
        if run is not None:
            query += " WHERE m.run = ?"
            params = (run,)
        df = pd.read_sql_query(query + " ORDER BY s.position, m.step, m.split, m.name", self._conn, params=params)
        df["value"] = df["value"].astype(float)
        return df

    def _has_table(self, name: str) -> bool:
        """Stores of earlier versions, opened read-only (not migrated), may lack a table."""
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None

    def failures(self) -> pd.DataFrame:
        if not self._has_table("failures"):
            return pd.DataFrame(columns=["run", "at", "error"])
        return pd.read_sql_query("SELECT run, at, error FROM failures ORDER BY at", self._conn)

    def status_counts(self) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT r.status, COUNT(*) FROM runs r JOIN study_runs s ON s.run = r.id GROUP BY r.status"
        ).fetchall()
        return dict(rows)

    def run_status(self, run_id: str) -> str | None:
        row = self._conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        return row[0] if row else None

    def run_ids_to_do(self) -> list[str]:
        """Runs of the study without a final result, in study order."""
        rows = self._conn.execute(
            "SELECT r.id FROM runs r JOIN study_runs s ON s.run = r.id WHERE r.status NOT IN (?, ?) "
            "ORDER BY s.position", FINAL,
        ).fetchall()
        return [r[0] for r in rows]

    def artifact_path(self, run: str, name: str) -> Path:
        return self.path / "runs" / run / name

    # ---- artifacts

    def artifacts(self, run: str | None = None) -> pd.DataFrame:
        """The artifact index ``(run, name, kind, epoch, split, size, sha256)``, of one run or all."""
        query = "SELECT run, name, kind, epoch, split, size, sha256 FROM artifacts"
        if not self._has_table("artifacts"):
            return pd.DataFrame(columns=["run", "name", "kind", "epoch", "split", "size", "sha256"])
        params: tuple = ()
        if run is not None:
            query += " WHERE run = ?"
            params = (run,)
        return pd.read_sql_query(query + " ORDER BY run, kind, epoch, name", self._conn, params=params)

    def artifact_bytes(self) -> int:
        """Disk used by the recorded artifact files, in bytes."""
        if not self._has_table("artifacts"):
            return 0
        return int(self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM artifacts").fetchone()[0])

    def read_artifact(self, run: str, name: str) -> bytes:
        """An artifact's bytes, checked against its recorded digest."""
        row = self._conn.execute("SELECT sha256 FROM artifacts WHERE run=? AND name=?", (run, name)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: run {run} has no artifact '{name}'")
        path = self.artifact_path(run, name)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise StoreError(f"{path}: cannot read the artifact: {err.strerror}") from None
        if hashlib.sha256(data).hexdigest() != row[0]:
            raise StoreError(f"{path}: the file does not match its recorded sha256 (damaged or replaced)")
        return data

    def checkpoint_epochs(self, run: str) -> list[int]:
        if not self._has_table("artifacts"):
            return []
        rows = self._conn.execute(
            "SELECT epoch FROM artifacts WHERE run=? AND kind='checkpoint' ORDER BY epoch", (run,)).fetchall()
        return [int(r[0]) for r in rows]

    def final_epoch(self, run: str) -> int | None:
        """The last epoch of a finished run (its final checkpoint's epoch), or None."""
        row = self._conn.execute("SELECT info_json, status FROM runs WHERE id=?", (run,)).fetchone()
        if row is None or row[1] != "done" or not row[0]:
            return None
        return json.loads(row[0]).get("epochs")

    def read_checkpoint_bytes(self, run: str, epoch: int | str = "final") -> bytes:
        if epoch == "final":
            epoch = self.final_epoch(run)
        if epoch not in self.checkpoint_epochs(run):
            have = self.checkpoint_epochs(run)
            raise StoreError(f"{self.path}: run {run} has no checkpoint at epoch {epoch} (it has: {have or 'none'})")
        from ablab.train.checkpoint import checkpoint_name

        return self.read_artifact(run, checkpoint_name(int(epoch)))

    def load_checkpoint(self, run: str, epoch: int | str = "final") -> dict[str, Any]:
        """A run's checkpoint (model, optimizer, step, epoch, seeds, random states); tensors on the CPU."""
        from ablab.train.checkpoint import load

        return load(self.read_checkpoint_bytes(run, epoch))

    def load_predictions(self, run: str, split: str = "test", epoch: int | str = "final",
                         kind: str = "predictions") -> np.ndarray:
        """A run's stored outputs on ``split`` at ``epoch`` (``final``: the latest stored), float32 [N, ...].

        ``kind``: ``predictions`` (the model's logits, an ensemble's averaged logits) or a TTA
        evaluator's averaged logits (``tta_flip_predictions``, ``tta_flip_crop_predictions``, …)."""
        return self._load_npy(run, kind, split, epoch)

    def load_labels(self, run: str, split: str = "test", epoch: int | str = "final") -> np.ndarray:
        """The class labels (int64 [N]) the ``predictions`` evaluator stored beside a run's outputs."""
        return self._load_npy(run, "labels", split, epoch)

    def prediction_epochs(self, run: str, split: str = "test") -> list[int]:
        """The epochs at which a run stored its outputs on ``split``."""
        rows = self.artifacts(run)
        return sorted(int(e) for e in rows[(rows.kind == "predictions") & (rows.split == split)]["epoch"])

    def _load_npy(self, run: str, kind: str, split: str, epoch: int | str) -> np.ndarray:
        rows = self.artifacts(run)
        rows = rows[(rows.kind == kind) & (rows.split == split)]
        if epoch != "final":
            rows = rows[rows.epoch == epoch]
        if rows.empty:
            raise StoreError(f"{self.path}: run {run} has no stored {kind} on '{split}' at epoch {epoch} "
                             "(record.evaluators: [standard, predictions])")
        name = rows.sort_values("epoch").iloc[-1]["name"]
        return np.load(io.BytesIO(self.read_artifact(run, name)), allow_pickle=False)

    # ---- metric facts

    def metric_direction(self, split: str, name: str) -> str | None:
        """``min`` or ``max`` as the evaluator that recorded ``name`` declared it; None if undeclared."""
        return self.directions().get(name)

    def directions(self) -> dict[str, str]:
        if not self._has_table("directions"):
            return {}
        return dict(self._conn.execute("SELECT name, direction FROM directions").fetchall())

    def final_values(self, split: str, name: str) -> dict[str, float]:
        """Each run's last recorded value (highest step, then epoch) of ``split.name``."""
        rows = self._conn.execute(
            "SELECT run, value FROM metrics WHERE split=? AND name=? ORDER BY run, step, epoch", (split, name)).fetchall()
        out: dict[str, float] = {}
        for run, value in rows:
            out[run] = float(value) if value is not None else float("nan")
        return out


def with_run_columns(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` with each run's label, replicate, status and axis values (one column per axis path).

    Scalar axis values are kept as they are (numbers stay numbers); a mapping or list (a whole
    component, ``optimizer: {name: sgd, lr: 0.1}``) is written as in labels (``sgd(lr=0.1)``).
    An axis whose path is already a column (``label``) is left out: the column holds it.
    """
    from ablab.labels import label_value

    paths = list(dict.fromkeys(p for axes in runs["axes"] for p in axes))
    columns = {"label": runs["label"], "replicate": runs["replicate"], "status": runs["status"]}
    for path in paths:
        if path not in columns and path not in metrics.columns:
            columns[path] = runs["axes"].map(lambda axes, p=path: _cell(axes.get(p), label_value))
    per_run = pd.DataFrame({"run": runs["run"], **columns})
    return metrics.merge(per_run, on="run", how="left", validate="many_to_one")


def _cell(value: Any, label_value) -> Any:
    return label_value(value) if isinstance(value, (dict, list)) else value


def require_results_path(path: Path) -> None:
    """One clear error, before anything is written, when ``path`` cannot hold a store (a file; ``ablab.db`` a folder)."""
    _require_directory(path)
    if (path / DB_NAME).is_dir():
        raise StoreError(f"{path / DB_NAME}: is a directory, not a results database; move it away or choose another --out")


def _require_directory(path: Path) -> None:
    """A results directory must be a folder or not exist yet (``--out`` naming a file is bad input)."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise StoreError(f"{path}: {part} is a file, not a folder; choose a results directory (--out) "
                                 "that is a folder or does not exist yet")
            return


def _require_store_file(path: Path, db: Path) -> None:
    """``path`` holds a non-empty ``ablab.db`` file, or one message says what it holds instead."""
    if db.is_dir():
        raise StoreError(f"{db}: is a directory, not a results database; name a results directory written by 'ablab run'")
    if not db.is_file():
        raise StoreError(f"{path}: not an ablab results directory (no {DB_NAME}); run 'ablab run SPEC' first")
    if db.stat().st_size == 0:
        raise StoreError(f"{db}: is empty (0 bytes), not an ablab store; remove it, or run the study into this "
                         "directory again")


def _check_is_store(db: Path, conn: sqlite3.Connection) -> None:
    """Reading the runs table proves an ablab store; an SQLite file without it is someone else's."""
    try:
        conn.execute("SELECT 1 FROM runs LIMIT 1")
    except sqlite3.OperationalError as err:
        if "no such table" not in str(err):
            raise
        raise StoreError(f"{db}: an SQLite database but not an ablab store (no runs table); "
                         "name a results directory written by 'ablab run'") from None


def _connect_readonly(db: Path) -> sqlite3.Connection:
    """Open ``db`` to read without changing or creating any file, even where this user cannot write.

    Without a ``-wal`` file a WAL database holds everything in its main file: it is read as
    immutable, since a plain read-only open would create ``-wal`` and ``-shm`` files and leave them
    behind. (A run that starts meanwhile writes into its own ``-wal``; the main file changes only at
    a checkpoint, after 1000 pages or when the run ends.) With a ``-wal`` file (a run is writing, or
    was killed) the reader goes through it to see the newest commits; where the folder refuses the
    ``-shm`` file (a read-only mount) it falls back to immutable and sees the main file only.
    """
    uri = db.resolve().as_uri()
    if db.with_name(db.name + "-wal").exists():
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            return conn
        except sqlite3.OperationalError:
            conn.close()
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30)


def _connect(db: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return _connect_readonly(db)
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
