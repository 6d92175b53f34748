"""Study specs: models (``models``), reading and overrides (``loading``), expansion into runs
(``expansion``) and variant labels (``labels``); run selectors are ``ablab.selectors``.

A study is a ``base`` run plus axes: ``grid`` (cartesian product), ``zip`` (vary together) and
``seeds`` (replicates, and which random streams vary between them). Axis keys are dotted paths
into the base run (``optimizer.lr``). Expansion yields fully resolved ``RunSpec``s (training) or
``EvalSpec``s (post-hoc units over stored runs).
"""

from ablab.spec.expansion import MAX_RUNS, expand
from ablab.spec.labels import _label_value, make_label
from ablab.spec.loading import import_spec_modules, load_study, read_stored_study, set_path
from ablab.spec.models import (
    Checkpoints, Component, Compute, Corrupt, EvalSpec, Execute, InitFrom, Member, MetricRef, Record, Resources, RunSpec,
    Seeds, Source, Study, UnitSpec, Variant, WeightDecay, parse_unit,
)

__all__ = [
    "MAX_RUNS", "Checkpoints", "Component", "Compute", "Corrupt", "EvalSpec", "InitFrom", "Member", "MetricRef",
    "Execute", "Record", "Resources", "RunSpec", "Seeds", "Source", "Study", "UnitSpec", "Variant", "WeightDecay",
    "_label_value", "expand", "import_spec_modules", "load_study", "make_label", "parse_unit", "read_stored_study", "set_path",
]
