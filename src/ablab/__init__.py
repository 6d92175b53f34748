"""ablab: a laboratory for controlled ablation studies of deep-learning training.

``import ablab`` gives every registry its built-in components (``ablab.components``, imported at the
first lookup of any registry, so that importing ablab loads no torch); a study's own modules
(``imports:``) and installed plug-ins register with the same decorators (docs/components.md).
"""

import functools
import importlib

from ablab.version import PROTOCOL_VERSION, __version__  # noqa: F401  (ablab.__version__, ablab.PROTOCOL_VERSION)


def load(path):
    """Open a study directory to read (never changing a file): ``ablab.load("results/x").metrics()``."""
    from ablab.store import Store

    return Store.open(path, readonly=True)


# Registering one's own components, with the decorators ablab's own use (docs/components.md):
# ``@ablab.register_model("mynet")`` in a module the study lists under ``imports:``.
from ablab.registry import (  # noqa: E402  (after the constants the registries' users import)
    ACTIVATIONS, AUGMENTATIONS, DATASETS, EVALUATORS, LOSSES, MODELS, NORMS, OBJECTIVES, OPTIMIZERS, PROBES,
    REPORT_SECTIONS, SCHEDULES, ATTACKS, set_builtin_loader,
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
register_attack = ATTACKS.register

# the built-ins register at the first lookup of any registry (``ablab.registry.load_builtins``)
set_builtin_loader(functools.partial(importlib.import_module, "ablab.components"))
