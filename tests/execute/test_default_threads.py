"""The thread count a run gets where --threads is not given."""

import os

import pytest

from ablab.execute import default_threads


@pytest.mark.parametrize("omp, cores, workers, expected", [
    (None, 8, 1, 8), (None, 8, 3, 2), (None, 2, 4, 1),  # the cores // workers, at least 1
    ("4", 16, 2, 2), ("1", 16, 1, 1),                    # OMP_NUM_THREADS stands for the cores
    ("0", 8, 2, 4), ("", 8, 2, 4), ("many", 8, 2, 4),    # unset, empty or not a positive count: the cores
])
def test_default_threads_divides_the_cores_or_omp_num_threads(omp, cores, workers, expected, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert default_threads(workers) == expected
