"""ablab: a laboratory for controlled ablation studies of deep-learning training.

``import ablab`` registers every built-in component (``ablab.components``); a study's own modules
(``imports:``) and installed plug-ins register with the same decorators (docs/components.md).
"""

from ablab.version import PROTOCOL_VERSION, __version__  # noqa: F401  (ablab.__version__, ablab.PROTOCOL_VERSION)


def load(path):
    """Open a study directory to read (never changing a file): ``ablab.load("results/x").metrics()``."""
    from ablab.store import Store

    return Store.open(path, readonly=True)


# Registering one's own components, with the decorators ablab's own use (docs/components.md):
# ``@ablab.register_model("mynet")`` in a module the study lists under ``imports:``.
from ablab.registry import (  # noqa: E402  (after the constants the registries' users import)
    ACTIVATIONS, AUGMENTATIONS, DATASETS, EVALUATORS, LOSSES, MODELS, NORMS, OBJECTIVES, OPTIMIZERS, PROBES,
    REPORT_SECTIONS, SCHEDULES,
)

register_dataset = DATASETS.register
register_model = MODELS.register
register_norm = NORMS.register
register_activation = ACTIVATIONS.register
register_optimizer = OPTIMIZERS.register
register_schedule = SCHEDULES.register
register_loss = LOSSES.register
register_augmentation = AUGMENTATIONS.register
register_probe = PROBES.register
register_objective = OBJECTIVES.register
register_evaluator = EVALUATORS.register
register_report_section = REPORT_SECTIONS.register

import ablab.components  # noqa: E402,F401  (last: registers every built-in component)
