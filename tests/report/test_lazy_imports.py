"""``import ablab`` registers every report section without loading the plotting and statistics libraries.

Every CLI call and every worker imports ablab; matplotlib (with PIL) and scipy.stats are loaded
only where a figure is drawn or a test is run. Each check runs in a fresh interpreter, as
``sys.modules`` of the test process already holds whatever other tests imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ablab.report.sections import PAGE_ORDER

TESTS = Path(__file__).resolve().parents[1]
REPORT_ONLY = ("matplotlib", "PIL", "scipy")

_IMPORT = f"""
import json, sys
import ablab
print(json.dumps({{"loaded": [m for m in {REPORT_ONLY!r} if m in sys.modules],
                  "sections": ablab.REPORT_SECTIONS.list_names()}}))
"""

_REPORT = f"""
import json, sys
from pathlib import Path
import pandas as pd
from ablab.report import write_report
from fakestore import FakeStore

runs = pd.DataFrame([("r0", "a", 0, "done", {{"x": 1}}), ("r1", "b", 0, "done", {{"x": 2}})],
                    columns=["run", "label", "replicate", "status", "axes"])
metrics = pd.DataFrame([(r, 10 * ep, ep, "test", "loss", 1.0 / (ep + 1 + i)) for i, r in enumerate(["r0", "r1"])
                        for ep in (0, 1)], columns=["run", "step", "epoch", "split", "name", "value"])
study = {{"name": "s", "file": "s.yaml", "spec": {{"grid": {{"x": [1, 2]}}}}, "report": {{"curves": ["test.loss"]}}}}
before = [m for m in {REPORT_ONLY!r} if m in sys.modules]
result = write_report(FakeStore(Path(sys.argv[1]), study, runs, metrics))
print(json.dumps({{"before": before, "after": "matplotlib" in sys.modules,
                  "figures": sorted(p.name for p in result.figures if p.is_file())}}))
"""


def _run(code: str, *args: str) -> dict:
    """The JSON a fresh interpreter prints after running ``code`` (tests/ on its path, for ``fakestore``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_ablab_registers_every_section_but_loads_no_plotting_or_stats_library():
    seen = _run(_IMPORT)
    assert seen["loaded"] == []
    assert sorted(seen["sections"]) == sorted(PAGE_ORDER)


def test_writing_a_report_loads_matplotlib_and_draws_its_figures(tmp_path):
    seen = _run(_REPORT, str(tmp_path / "study"))
    assert seen["before"] == []  # the report package itself, imported above, loaded none of them
    assert seen["after"] is True
    assert seen["figures"] == ["curve_00_test.loss.png"]
