"""A study's metrics out of the store: one CSV or Parquet table, or TensorBoard event files per run.

The table is ``Store.metrics(with_axes=True)``: every recorded value (run, step, epoch, split,
name, value) with the run's label, replicate, status and axis values. TensorBoard: one folder per
run (``<label> #<replicate>``), one scalar series per ``split/name`` over the training step.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

from ablab.errors import AblabError
from ablab.tfevents import EventWriter

FORMATS = ("csv", "parquet")


def export_table(store, fmt: str, out: Path) -> int:
    """Write every metric with its run's columns to ``out``; the number of rows written."""
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise AblabError("--format parquet needs pyarrow: pip install -e '.[export]' (or pip install pyarrow; or use --format csv)")
    frame = store.metrics(with_axes=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(out, index=False, float_format="%.17g")  # 17 digits: every float64 reads back exactly
    else:
        frame.to_parquet(out, index=False)
    return len(frame)


def require_folder(path: Path, what: str) -> None:
    """One clear error, before anything is written, when ``path`` or a folder above it is a file."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise AblabError(f"{path}: {part} is a file, not a folder; {what}")
            return


MAX_FOLDER = 120  # characters of a run's folder name taken from its label


def run_folder(label: str, replicate: int) -> str:
    """A folder name TensorBoard shows as the run's name, safe to type in a shell: the label's letters,
    digits and ``. = , + -``, every other run of characters (spaces, parentheses, slashes) one ``_``, then
    ``_rep<replicate>``: ``model.norm=none,optimizer=sgd_lr=0.05,momentum=0.9_rep0``."""
    safe = re.sub(r"[^A-Za-z0-9.=,+-]+", "_", label.replace(", ", ",")).strip("_")[:MAX_FOLDER] or "run"
    return f"{safe}_rep{replicate}"


def export_tensorboard(store, outdir: Path) -> list[Path]:
    """One event file per run that recorded metrics; tags ``split/name``, steps the training step.

    Wall time: the run's start (the store keeps no time per value), so TensorBoard's relative-time
    axis is not meaningful; the step axis is.
    """
    require_folder(outdir, "--tensorboard names the folder TensorBoard reads (tensorboard --logdir OUTDIR)")
    metrics = store.metrics()
    written, taken = [], set()
    for r in store.runs().itertuples():
        rows = metrics[metrics["run"] == r.run]
        if rows.empty:
            continue
        wall = float(r.started) if r.started is not None and math.isfinite(r.started) else 0.0
        folder = run_folder(r.label, int(r.replicate))
        if folder in taken:  # two labels that differ only in characters the name leaves out
            folder = f"{folder}_{r.run[:8]}"
        taken.add(folder)
        with EventWriter(outdir / folder, wall) as writer:
            for m in rows.itertuples():
                writer.scalar(f"{m.split}/{m.name}", float(m.value), int(m.step), wall)
        written.append(writer.path)
    return written
