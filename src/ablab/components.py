"""Imports every module that registers a built-in component, so every registry is complete.

``ablab/__init__.py`` imports this module last; a study's own modules and installed plug-ins are
loaded by ``ablab.plugins``.
"""

import ablab.data.digits  # noqa: F401
import ablab.losses  # noqa: F401
import ablab.models.layers  # noqa: F401
import ablab.models.mlp  # noqa: F401
import ablab.norm  # noqa: F401
import ablab.optim  # noqa: F401
import ablab.data.augment  # noqa: F401
import ablab.data.mixing  # noqa: F401
import ablab.data.datasets  # noqa: F401
import ablab.data.obesity  # noqa: F401
import ablab.train.probes  # noqa: F401
import ablab.train.evaluators  # noqa: F401
import ablab.train.attacks  # noqa: F401
import ablab.train.robust  # noqa: F401
import ablab.train.tta  # noqa: F401
import ablab.train.objectives  # noqa: F401
import ablab.report.sections  # noqa: F401
