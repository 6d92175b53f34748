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
    tally = soak_faults.campaign(0, seed=3, work=tmp_path, epochs=8, kinds=["kill-worker", "kill-group", "sigterm"],
                                 threads=threads)
    assert tally.problems == {}, tally.notes
    # every fault struck a running study (runs held at a gate), however fast the machine
    assert tally.cycles == 3 and tally.missed == 0
    assert tally.kills == {"kill-worker": 1, "kill-group": 1, "sigterm": 1}
    assert tally.rounds >= 1  # the last resume finished the study, equal to the reference run


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes by pid in /proc")
def test_a_full_disk_and_a_damaged_store_lose_nothing_and_the_same_command_resumes(tmp_path):
    """Issue 26: a full disk during training is exit 74 with no run charged; a dropped table or a truncated
    database is exit 74 with the damaged file left as it was; after each (space freed, the copy put back)
    the same command resumes to a study equal to an uninterrupted one."""
    # kill-worker: its round finishes (exit 0), so drop-table damages a finished store (4 runs to lose);
    # disk-full starts the next round, truncate-db damages its store
    tally = soak_faults.campaign(0, seed=4, work=tmp_path, epochs=4,
                                 kinds=["kill-worker", "drop-table", "disk-full", "truncate-db"])
    assert tally.problems == {}, tally.notes
    assert tally.cycles == 4 and tally.missed == 0
    assert tally.kills == {"kill-worker": 1, "drop-table": 1, "disk-full": 1, "truncate-db": 1}
    assert tally.rounds >= 2  # the last resume finished the second round, equal to the reference run
