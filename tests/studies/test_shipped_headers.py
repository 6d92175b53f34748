"""A shipped study's header states what the study measures: its numbers are read here and compared with a
stored run of the study (issue 21).

``tests/studies/measured/quickstart.json`` holds the final test accuracy of every run of a full
``ablab run studies/quickstart.yaml`` (2 CPU threads; ids included, so a changed spec or protocol shows as
a stale file). Rewrite it after such a change from a fresh run: the run ids and final ``test.accuracy``
of each run in ``results/quickstart``, then correct the header to match.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from ablab.spec import expand, load_study

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"
MEASURED = Path(__file__).resolve().parent / "measured" / "quickstart.json"


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return " ".join(lines)


def _by_variant() -> dict[tuple[str, str], list[float]]:
    """(norm, optimizer) -> the stored runs' final test accuracies."""
    stored = json.loads(MEASURED.read_text())
    out: dict[tuple[str, str], list[float]] = {}
    for r in stored["runs"]:
        norm = re.search(r"model\.norm=(\w+)", r["label"]).group(1)
        optimizer = re.search(r"optimizer=(\w+)", r["label"]).group(1)
        out.setdefault((norm, optimizer), []).append(r["value"])
    return out


def test_the_stored_run_is_a_run_of_the_shipped_spec():
    stored = json.loads(MEASURED.read_text())
    ids = sorted(v.id for v in expand(load_study(QUICKSTART), file=str(QUICKSTART)))
    assert sorted(r["run"] for r in stored["runs"]) == ids, (
        "studies/quickstart.yaml no longer expands to the stored runs: run it again, rewrite "
        f"{MEASURED.name} and check its header")


def test_the_quickstart_header_gives_the_measured_accuracies():
    header = _header(QUICKSTART)
    stated = re.findall(r"norm=(\w+), (\w+) (\d+\.\d) ± (\d+\.\d) %", header)
    measured = _by_variant()
    assert {(n, o) for n, o, _, _ in stated} == set(measured) and len(stated) == 4, header
    for norm, optimizer, mean, sd in stated:
        values = measured[(norm, optimizer)]
        assert len(values) == 3
        assert float(mean) == pytest.approx(100 * statistics.mean(values), abs=0.05 + 1e-9), (norm, optimizer)
        assert float(sd) == pytest.approx(100 * statistics.stdev(values), abs=0.05 + 1e-9), (norm, optimizer)


def test_the_quickstart_header_gives_the_measured_differences():
    header = _header(QUICKSTART)
    measured = {k: 100 * statistics.mean(v) for k, v in _by_variant().items()}
    gains = re.findall(r"\+(\d+\.\d) pp under (\w+)", header)
    assert {o for _, o in gains} == {"sgd", "adam"}, header
    for gain, optimizer in gains:
        assert float(gain) == pytest.approx(measured[("batchnorm", optimizer)] - measured[("none", optimizer)],
                                            abs=0.05 + 1e-9), optimizer
    sds = [100 * statistics.stdev(v) for v in _by_variant().values()]
    (bound,) = re.findall(r"seed SDs \(at most (\d+\.\d) pp\)", header)
    assert max(sds) <= float(bound) and min(float(g) for g, _ in gains) > 3 * max(sds)  # "far beyond"
    (optimizer_bound,) = re.findall(r"the optimizer changes less than (\d+\.\d) pp", header)
    for norm in ("none", "batchnorm"):
        assert abs(measured[(norm, "sgd")] - measured[(norm, "adam")]) < float(optimizer_bound)
