"""Optimizers, schedules and parameter-group rules (registered in ``OPTIMIZERS``/``SCHEDULES``)."""

from ablab.optim import optimizers as _optimizers  # noqa: F401
from ablab.optim import schedules as _schedules  # noqa: F401
