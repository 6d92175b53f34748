"""The read API of a results directory: its study, runs, metrics, artifacts, checkpoints and predictions.

``StoreReader`` reads through an open SQLite connection and never writes; ``ablab.store.Store``
(``database.py``) adds opening and the writer's transactions. Stores of earlier versions, opened
read-only and so not migrated, may lack a table or a column: each reader says what it returns then.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablab.artifacts import (CHECKPOINT_KIND, LABELS_KIND, PREDICTIONS_KIND, checkpoint_name, load_checkpoint,
                             load_npy)
from ablab.errors import StoreError, StoreIOError
from ablab.labels import label_value
from ablab.store import layout
from ablab.store.errors import failing_as_io
from ablab.store.layout import DB_NAME

FINAL = ("done", "diverged")  # statuses a rerun keeps; everything else runs again


class StoreReader:
    """The reading half of a study directory's store: ``path`` and an open connection."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    @property
    def db(self) -> Path:
        return self.path / DB_NAME

    def close(self) -> None:
        self._conn.close()

    def _query(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        """``pd.read_sql_query``; a damaged page met while reading is one ``StoreIOError`` naming the database
        (pandas wraps SQLite's error in one of its own, which no handler recognised: a traceback, exit 1)."""
        with failing_as_io(self.db):
            try:
                return pd.read_sql_query(sql, self._conn, params=params)
            except pd.errors.DatabaseError as err:
                if isinstance(err.__cause__, sqlite3.DatabaseError):
                    raise err.__cause__ from None
                raise

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
            "name": name, "file": file, "description": description, "spec": self._json(spec_json, "study.spec_json"),
            "report": self._json(report_json, "study.report_json"), "code_version": version,
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
        df = self._query(query, params)
        for column in ("origin", "axes", "spec", "info"):
            df[column] = df.pop(f"{column}_json").map(
                lambda v, c=column: self._json(v, f"runs.{c}_json") if isinstance(v, str) else {})
        df["in_study"] = df.pop("position").notna()
        return df

    def _json(self, text: str, where: str) -> Any:
        """A JSON column's value; a value that is not JSON means a damaged store (exit 74, naming the column)."""
        try:
            return json.loads(text)
        except (ValueError, TypeError) as err:
            raise StoreIOError(f"{self.db}: the results database is damaged: {where} holds no valid JSON ({err}); "
                               "restore ablab.db from a copy, or move the directory away and run the study "
                               "again (its runs are then trained again)") from None

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
        df = self._query(query + " ORDER BY s.position, m.step, m.split, m.name", params)
        df["value"] = df["value"].astype(float)
        return df

    def _has_table(self, name: str) -> bool:
        """Stores of earlier versions, opened read-only (not migrated), may lack a table."""
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None

    def failures(self) -> pd.DataFrame:
        if not self._has_table("failures"):
            return pd.DataFrame(columns=["run", "at", "error"])
        return self._query("SELECT run, at, error FROM failures ORDER BY at")

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
        """Where a stored run's artifact ``name`` lies (read it with ``read_artifact``, which checks its digest)."""
        return layout.artifact_path(self.path, run, name)

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
        return self._query(query + " ORDER BY run, kind, epoch, name", params)

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
        """The epochs after which ``run`` stored a checkpoint, ascending."""
        if not self._has_table("artifacts"):
            return []
        rows = self._conn.execute(
            "SELECT epoch FROM artifacts WHERE run=? AND kind=? ORDER BY epoch", (run, CHECKPOINT_KIND)).fetchall()
        return [int(r[0]) for r in rows]

    def final_epoch(self, run: str) -> int | None:
        """The last epoch of a finished run (its final checkpoint's epoch), or None."""
        row = self._conn.execute("SELECT info_json, status FROM runs WHERE id=?", (run,)).fetchone()
        if row is None or row[1] != "done" or not row[0]:
            return None
        return json.loads(row[0]).get("epochs")

    def read_checkpoint_bytes(self, run: str, epoch: int | str = "final") -> bytes:
        """A run's checkpoint file at ``epoch`` (``final``: its last epoch), checked against its digest."""
        if epoch == "final":
            epoch = self.final_epoch(run)
        if epoch not in self.checkpoint_epochs(run):
            have = self.checkpoint_epochs(run)
            raise StoreError(f"{self.path}: run {run} has no checkpoint at epoch {epoch} (it has: {have or 'none'})")
        return self.read_artifact(run, checkpoint_name(int(epoch)))

    def load_checkpoint(self, run: str, epoch: int | str = "final") -> dict[str, Any]:
        """A run's checkpoint (model, optimizer, step, epoch, seeds, random states); tensors on the CPU."""
        return load_checkpoint(self.read_checkpoint_bytes(run, epoch))

    def load_predictions(self, run: str, split: str = "test", epoch: int | str = "final",
                         kind: str = PREDICTIONS_KIND) -> np.ndarray:
        """A run's stored outputs on ``split`` at ``epoch`` (``final``: the latest stored), float32 [N, ...].

        ``kind``: ``predictions`` (the model's logits, an ensemble's averaged logits) or a TTA
        evaluator's averaged logits (``tta_flip_predictions``, ``tta_flip_crop_predictions``, …)."""
        return self._load_npy(run, kind, split, epoch)

    def load_labels(self, run: str, split: str = "test", epoch: int | str = "final") -> np.ndarray:
        """The class labels (int64 [N]) the ``predictions`` evaluator stored beside a run's outputs."""
        return self._load_npy(run, LABELS_KIND, split, epoch)

    def prediction_epochs(self, run: str, split: str = "test") -> list[int]:
        """The epochs at which a run stored its outputs on ``split``."""
        rows = self.artifacts(run)
        return sorted(int(e) for e in rows[(rows.kind == PREDICTIONS_KIND) & (rows.split == split)]["epoch"])

    def _load_npy(self, run: str, kind: str, split: str, epoch: int | str) -> np.ndarray:
        rows = self.artifacts(run)
        rows = rows[(rows.kind == kind) & (rows.split == split)]
        if epoch != "final":
            rows = rows[rows.epoch == epoch]
        if rows.empty:
            raise StoreError(f"{self.path}: run {run} has no stored {kind} on '{split}' at epoch {epoch} "
                             "(record.evaluators: [standard, predictions])")
        name = rows.sort_values("epoch").iloc[-1]["name"]
        return load_npy(self.read_artifact(run, name))

    # ---- metric facts

    def metric_direction(self, split: str, name: str) -> str | None:
        """``min`` or ``max`` as the evaluator that recorded ``name`` declared it; None if undeclared."""
        return self.directions().get(name)

    def directions(self) -> dict[str, str]:
        if not self._has_table("directions"):
            return {}
        return dict(self._conn.execute("SELECT name, direction FROM directions").fetchall())

    def metric_names(self) -> list[str]:
        """Every ``split.name`` some run of this store recorded, sorted."""
        rows = self._conn.execute("SELECT DISTINCT split, name FROM metrics ORDER BY split, name").fetchall()
        return [f"{split}.{name}" for split, name in rows]

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
    paths = list(dict.fromkeys(p for axes in runs["axes"] for p in axes))
    columns = {"label": runs["label"], "replicate": runs["replicate"], "status": runs["status"]}
    for path in paths:
        if path not in columns and path not in metrics.columns:
            columns[path] = runs["axes"].map(lambda axes, p=path: _cell(axes.get(p)))
    per_run = pd.DataFrame({"run": runs["run"], **columns})
    return metrics.merge(per_run, on="run", how="left", validate="many_to_one")


def _cell(value: Any) -> Any:
    return label_value(value) if isinstance(value, (dict, list)) else value
