"""The results store of one study directory: SQLite plus per-run artifact files.

Layout::

    results/<study>/ablab.db          studies, runs (status, resolved spec, code version), metrics
    results/<study>/runs/<id>/...      artifact files, each written to a temporary name then renamed
    results/<study>/report/            written by ``ablab report``

Only the driver writes. A run's metrics and its final status are written in one transaction,
so a killed study never holds half a run: unfinished runs are simply run again.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

from ablab import PROTOCOL_VERSION
from ablab.errors import StoreError

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
"""


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """ablab's version plus a hash of its source files, so every result names the code behind it."""
    import hashlib

    import ablab

    root = Path(ablab.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{ablab.__version__}+{h.hexdigest()[:12]}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """One study directory. ``Store.open(path)`` to read, ``Store.create(path)`` to write."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    # ---- opening

    @classmethod
    def create(cls, path: str | Path) -> "Store":
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        conn = _connect(path / DB_NAME)
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('protocol', ?)", (str(PROTOCOL_VERSION),))
        return cls(path, conn)

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        path = Path(path)
        db = path / DB_NAME
        if not db.is_file():
            raise StoreError(f"{path}: not an ablab results directory (no {DB_NAME}); run 'ablab run SPEC' first")
        try:
            conn = _connect(db)
            conn.execute("SELECT 1 FROM runs LIMIT 1")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{db}: cannot read the results database: {err}") from None
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    # ---- writing (driver only)

    def sync_study(self, study: Any, file: str, variants: list[Any]) -> None:
        """Record the study and its runs; runs already stored keep their status and results."""
        version = code_version()
        with self._conn:
            self._conn.execute("DELETE FROM study")
            self._conn.execute(
                "INSERT INTO study VALUES (?,?,?,?,?,?,?)",
                (study.name, file, study.description, study.model_dump_json(),
                 study.report.model_dump_json(), version, time.time()),
            )
            self._conn.executemany(
                "INSERT INTO runs(id, label, replicate, axes_json, spec_json, status, code_version) "
                "VALUES (?,?,?,?,?, 'pending', ?) ON CONFLICT(id) DO UPDATE SET "
                "label=excluded.label, axes_json=excluded.axes_json",
                [(v.id, v.label, v.replicate, json.dumps(v.axes, sort_keys=True, default=str),
                  v.spec.canonical_json(), version) for v in variants],
            )
            self._conn.execute("DELETE FROM study_runs")
            self._conn.executemany("INSERT INTO study_runs VALUES (?,?)", list(enumerate(v.id for v in variants)))

    def mark_running(self, run_id: str) -> None:
        with self._conn:
            self._conn.execute(
                "UPDATE runs SET status='running', started=?, attempts=attempts+1 WHERE id=?",
                (time.time(), run_id),
            )

    def mark_pending(self, run_ids: Iterable[str]) -> None:
        """Runs interrupted before a result came back run again next time."""
        with self._conn:
            self._conn.executemany(
                "UPDATE runs SET status='pending' WHERE id=? AND status='running'", [(r,) for r in run_ids]
            )

    def record(self, result: "RunResult") -> None:
        """Store a finished run: artifacts first (atomic files), then metrics + status in one transaction."""
        run_dir = self.path / "runs" / result.run_id
        spec_json = self._conn.execute("SELECT spec_json FROM runs WHERE id=?", (result.run_id,)).fetchone()
        if spec_json is None:
            raise StoreError(f"run {result.run_id} is not part of this study")
        write_atomic(run_dir / "spec.json", json.dumps(
            {"spec": json.loads(spec_json[0]), "code_version": code_version()}, indent=2).encode())
        for name, data in result.artifacts.items():
            write_atomic(run_dir / name, data)
        with self._conn:
            self._conn.execute("DELETE FROM metrics WHERE run=?", (result.run_id,))
            self._conn.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?,?)",
                [(result.run_id, s, e, sp, n, v) for (s, e, sp, n, v) in result.metrics],
            )
            if result.status == "failed":
                self._conn.execute("INSERT INTO failures VALUES (?,?,?)", (result.run_id, time.time(), result.error))
            self._conn.execute(
                "UPDATE runs SET status=?, error=?, device=?, started=?, finished=?, duration_s=?, "
                "code_version=?, info_json=? WHERE id=?",
                (result.status, result.error, result.device, result.started, time.time(),
                 result.duration_s, code_version(), json.dumps(result.info), result.run_id),
            )

    # ---- reading

    def study(self) -> dict[str, Any]:
        row = self._conn.execute("SELECT name, file, description, spec_json, report_json, code_version FROM study").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: the store holds no study yet")
        name, file, description, spec_json, report_json, version = row
        return {
            "name": name, "file": file, "description": description, "spec": json.loads(spec_json),
            "report": json.loads(report_json), "code_version": version,
        }

    def runs(self, all_runs: bool = False) -> pd.DataFrame:
        """One row per run of the current study (``all_runs``: also runs of earlier versions of it)."""
        query = (
            "SELECT r.id AS run, r.label, r.replicate, r.status, r.axes_json, r.spec_json, r.error, "
            "r.duration_s, r.device, r.code_version, r.started, r.finished, r.attempts, r.info_json, s.position "
            "FROM runs r {join} study_runs s ON s.run = r.id ORDER BY s.position, r.id"
        ).format(join="LEFT JOIN" if all_runs else "JOIN")
        df = pd.read_sql_query(query, self._conn)
        df["axes"] = df.pop("axes_json").map(json.loads)
        df["spec"] = df.pop("spec_json").map(json.loads)
        df["info"] = df.pop("info_json").map(lambda v: json.loads(v) if isinstance(v, str) else {})
        df["in_study"] = df.pop("position").notna()
        return df

    def metrics(self, run: str | None = None) -> pd.DataFrame:
        """Long-format metrics ``(run, step, epoch, split, name, value)`` of the study's runs."""
        query = "SELECT m.run, m.step, m.epoch, m.split, m.name, m.value FROM metrics m JOIN study_runs s ON s.run = m.run"
        params: tuple = ()
        if run is not None:
            query += " WHERE m.run = ?"
            params = (run,)
        df = pd.read_sql_query(query + " ORDER BY s.position, m.step, m.split, m.name", self._conn, params=params)
        df["value"] = df["value"].astype(float)
        return df

    def failures(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT run, at, error FROM failures ORDER BY at", self._conn)

    def status_counts(self) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT r.status, COUNT(*) FROM runs r JOIN study_runs s ON s.run = r.id GROUP BY r.status"
        ).fetchall()
        return dict(rows)

    def run_ids_to_do(self) -> list[str]:
        """Runs of the study without a final result, in study order."""
        rows = self._conn.execute(
            "SELECT r.id FROM runs r JOIN study_runs s ON s.run = r.id WHERE r.status NOT IN (?, ?) "
            "ORDER BY s.position", FINAL,
        ).fetchall()
        return [r[0] for r in rows]

    def artifact_path(self, run: str, name: str) -> Path:
        return self.path / "runs" / run / name


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
