"""The fault-injection campaign, short: one fault of each hard kind, resuming after each, every check held."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import soak_faults  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes by pid in /proc")
@pytest.mark.parametrize("threads", [1, 2], ids=["forked-workers", "forkserver-workers"])
def test_three_faults_lose_and_duplicate_nothing_and_leave_no_process(threads, tmp_path):
    tally = soak_faults.campaign(0, seed=3, work=tmp_path, epochs=24, kinds=["kill-worker", "kill-group", "sigterm"],
                                 threads=threads)
    assert tally.problems == {}, tally.notes
    assert tally.cycles == 3 and sum(tally.kills.values()) + tally.missed == 3
    assert sum(tally.kills.values()) >= 2  # the study outlasted most faults: they hit a running study
    assert tally.rounds >= 1  # the last resume finished the study, equal to the reference run
