"""The pins of a refactor: what the shipped specs expand to and what three small studies store and report.

``python tests/pins/pinning.py --write`` records them from the code as it is (only when a change is
meant to alter numbers, with PROTOCOL_VERSION bumped); ``tests/pins/test_pins.py`` compares. Run ids
and the structure of every table compare exactly everywhere. Metric values and table numbers compare
bitwise on a machine where the training reproduces the recorded bits (this one, the one that wrote
them), and to the last printed digit elsewhere (another CPU may round a float32 sum differently).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN = HERE / "golden"
DATA_PATH = "/tmp/ablab-pins-data"  # any existing folder: expansion checks that it exists, ids include it
STUDIES = ("pin_study", "pin_continue", "pin_ensemble")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def shipped_specs() -> list[Path]:
    return sorted(p for p in (ROOT / "studies").rglob("*.yaml"))


def run_ids() -> dict[str, list[list]]:
    """Every shipped spec's variants as [label, replicate, id]; a full-size spec with ``data.path`` set to
    DATA_PATH, in an empty working directory (a stored source study is then absent: pinned as not expandable)."""
    import ablab
    from ablab.spec import expand, load_study

    out = {}
    with tempfile.TemporaryDirectory() as cwd, contextlib.chdir(cwd):
        Path(DATA_PATH).mkdir(parents=True, exist_ok=True)
        for path in shipped_specs():
            name = str(path.relative_to(ROOT))
            overrides = [f"data.path={DATA_PATH}"] if "path" in path.read_text() else []
            try:
                variants = expand(load_study(path, overrides), name, open_stored=ablab.load)
                out[name] = [[v.label, v.replicate, v.id] for v in variants]
            except Exception as err:  # noqa: BLE001
                out[name] = f"not expandable here: {type(err).__name__}"
    return out


def train_pins(out: Path) -> dict[str, Path]:
    """The three pin studies trained into ``out`` with their reports; their directories by name."""
    ablab = [sys.executable, "-m", "ablab"]
    dirs = {s: out / s for s in STUDIES}
    for s in STUDIES:
        extra = ["--set", f"source.study={dirs['pin_study']}"] if s == "pin_ensemble" else []
        workers = ["--workers", "2"] if s != "pin_ensemble" else []
        subprocess.run([*ablab, "run", str(HERE / f"{s}.yaml"), "--out", str(dirs[s]), *workers, *extra],
                       check=True, capture_output=True, cwd=ROOT)
        subprocess.run([*ablab, "report", str(dirs[s])], check=True, capture_output=True, cwd=ROOT)
    return dirs


def stored(study_dir: Path) -> dict:
    """What a pin study stored: runs, every metric (floats as repr), artifact digests (not checkpoints)."""
    conn = sqlite3.connect(f"file:{study_dir / 'ablab.db'}?mode=ro", uri=True)
    try:
        runs = conn.execute("SELECT id, label, replicate, status FROM runs ORDER BY label, replicate").fetchall()
        metrics = conn.execute("SELECT run, step, epoch, split, name, value FROM metrics "
                               "ORDER BY run, split, name, step, epoch").fetchall()
        artifacts = conn.execute("SELECT run, name, kind, sha256 FROM artifacts WHERE kind != 'checkpoint' "
                                 "ORDER BY run, name").fetchall()
    finally:
        conn.close()
    return {"runs": [list(r) for r in runs],
            "metrics": [[r, s, e, sp, n, repr(float(v)) if v is not None else None] for r, s, e, sp, n, v in metrics],
            "artifacts": [list(a) for a in artifacts]}


def tables(study_dir: Path) -> dict[str, str]:
    folder = study_dir / "report" / "tables"
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.is_file()}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def same_to_printed_digit(expected: str, got: str) -> bool:
    """Equal text apart from numbers, and numbers equal to within one unit of their last printed digit."""
    if NUMBER.sub("#", expected) != NUMBER.sub("#", got):
        return False
    for a, b in zip(NUMBER.findall(expected), NUMBER.findall(got)):
        digits = len(a.split("e")[0].split("E")[0].partition(".")[2])
        exp = int(re.split("[eE]", a)[1]) if re.search("[eE]", a) else 0
        if abs(float(a) - float(b)) > 1.01 * 10 ** (exp - digits) + 1e-5 * abs(float(a)):
            return False
    return True


def write(out: Path) -> None:
    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / "run_ids.json").write_text(json.dumps(run_ids(), indent=1) + "\n")
    for name, d in train_pins(out).items():
        target = GOLDEN / name
        (target / "tables").mkdir(parents=True, exist_ok=True)
        (target / "stored.json").write_text(json.dumps(stored(d), indent=0) + "\n")
        for fname, text in tables(d).items():
            (target / "tables" / fname).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="WORKDIR", type=Path, required=True,
                        help="train the pin studies in WORKDIR and write tests/pins/golden/")
    write(parser.parse_args().write)
