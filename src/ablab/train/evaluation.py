"""The one evaluation path: evaluators over splits, their values and files recorded.

The training loop calls ``evaluate`` with the evaluators due after an epoch; a post-hoc unit calls
it once with all of its evaluators over its members' restored models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ablab.data.base import Split
from ablab.train.evaluators import EvalContext, Evaluator
from ablab.train.result import ArtifactSink, MetricRow


@dataclass
class Records:
    """What a unit records: long-format metric rows, each metric's declared direction, and artifact files."""

    sink: ArtifactSink
    metrics: list[MetricRow] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)


def evaluate(evaluators: list[Evaluator], ctx: EvalContext, splits: dict[str, Split], default_splits: list[str],
             step: int, epoch: int, records: Records) -> bool:
    """Run each evaluator on its splits (``default_splits`` where it names none) at ``step``/``epoch`` and
    record what it returns; False as soon as an evaluator gave a value that is not finite (the rest are skipped)."""
    for ev in evaluators:
        records.directions.update(ev.directions(ctx.classification))
        finite = True
        for split_name in ev.splits_for(default_splits):
            if split_name not in splits:
                raise ValueError(f"the dataset has no '{split_name}' split (has {', '.join(splits)})")
            result = ev.evaluate(ctx, split_name, splits[split_name], epoch)
            for name, value in result.metrics.items():
                records.metrics.append((step, epoch, split_name, name, value))
                finite &= math.isfinite(value)
            for name, (kind, data) in result.artifacts.items():
                records.sink.put(name, data, kind, epoch=epoch, split=split_name)
        if not finite:
            return False
    return True
