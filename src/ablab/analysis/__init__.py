"""Analysis of stored results as frames: statistics over seeds (``seeds``, re-exported here), grids and best
configurations (``grids``, ``multiple_tests``), trajectories, run-to-run variability and CKA (``variability``,
``stored_variability``), loss spread, mixing arms."""

from ablab.analysis.seeds import (
    aggregate,
    curves,
    describe_selection,
    higher_is_better,
    run_curves,
    select_final,
)

__all__ = ["aggregate", "curves", "describe_selection", "higher_is_better", "run_curves", "select_final"]
