"""Analysis of stored results: statistics over seeds (more to come: diversity, trajectories, grids)."""

from ablab.analysis.seeds import (
    aggregate,
    curves,
    describe_selection,
    higher_is_better,
    run_curves,
    select_final,
)

__all__ = ["aggregate", "curves", "describe_selection", "higher_is_better", "run_curves", "select_final"]
