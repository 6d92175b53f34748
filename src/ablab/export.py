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
        raise AblabError("--format parquet needs pyarrow: pip install 'ablab[export]' (or use --format csv)")
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


def run_folder(label: str, replicate: int) -> str:
    """A folder name TensorBoard shows as the run's name: the label with path separators replaced."""
    return re.sub(r"[/\\\x00]", "_", f"{label} #{replicate}")


def export_tensorboard(store, outdir: Path) -> list[Path]:
    """One event file per run that recorded metrics; tags ``split/name``, steps the training step.

    Wall time: the run's start (the store keeps no time per value), so TensorBoard's relative-time
    axis is not meaningful; the step axis is.
    """
    require_folder(outdir, "--tensorboard names the folder TensorBoard reads (tensorboard --logdir OUTDIR)")
    metrics = store.metrics()
    written = []
    for r in store.runs().itertuples():
        rows = metrics[metrics["run"] == r.run]
        if rows.empty:
            continue
        wall = float(r.started) if r.started is not None and math.isfinite(r.started) else 0.0
        with EventWriter(outdir / run_folder(r.label, int(r.replicate)), wall) as writer:
            for m in rows.itertuples():
                writer.scalar(f"{m.split}/{m.name}", float(m.value), int(m.step), wall)
        written.append(writer.path)
    return written
