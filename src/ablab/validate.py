"""Deep validation of a whole study before its first run: data, models, optimizers, schedules.

``spec.expand`` already checks every field's type and every component name; this builds each
distinct component once (models on the ``meta`` device, so no memory or time is spent) to catch
what only the component can know: a missing or corrupt dataset file, a norm placement index
out of range, a loss that does not fit the task.
"""

from __future__ import annotations

import json

import torch

from ablab.errors import AblabError, SpecError
from ablab.registry import AUGMENTATIONS, LOSSES, MODELS, SCHEDULES
from ablab.spec import Variant
from ablab.train.loop import build_optimizer, load_run_data, plan_duration


def _key(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def check_variants(variants: list[Variant], file: str) -> None:
    """Raise one ``SpecError`` (file, field, variant) for the first run that cannot be built."""
    datasets: dict[str, object] = {}
    seen: set[str] = set()
    for v in variants:
        spec = v.spec
        where = f" (variant '{v.label}')" if v.axes else ""

        def fail(err: Exception, field: str) -> SpecError:
            if isinstance(err, SpecError):
                e = err.located(prefix=field)
                return SpecError(e.message + where, field=e.field, file=file)
            return SpecError(f"{err}{where}", field=field, file=file)

        dkey = _key([spec.data, spec.corrupt])
        if dkey not in datasets:
            try:
                datasets[dkey] = load_run_data(spec)
            except AblabError as err:
                raise fail(err, "base.data") from None
        data = datasets[dkey]
        key = _key([spec.data, spec.model, spec.optimizer, spec.schedule, spec.loss, spec.augment,
                    spec.batch_size, spec.drop_last, spec.epochs, spec.steps, spec.record.eval_splits])
        if key in seen:
            continue
        seen.add(key)
        for split in spec.record.eval_splits:
            if split not in data.splits:
                raise fail(SpecError(f"dataset has no '{split}' split (has {', '.join(data.splits)})"), "base.record.eval_splits")
        try:
            with torch.device("meta"):
                model = MODELS.create(spec.model, in_shape=tuple(data.in_shape), out_dim=data.out_dim)
        except Exception as err:  # noqa: BLE001  (any failure to build is a spec problem)
            raise fail(err, "base.model") from None
        try:
            build_optimizer(spec, model)
        except Exception as err:  # noqa: BLE001
            raise fail(err, "base.optimizer") from None
        try:
            plan = plan_duration(spec, len(data.splits["train"]))
            schedule = SCHEDULES.create(spec.schedule, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch)
            schedule(0)
        except Exception as err:  # noqa: BLE001
            raise fail(err, "base.schedule") from None
        loss = LOSSES.create(spec.loss)
        if getattr(loss, "needs_classes", False) and data.task != "classification":
            raise fail(SpecError(f"loss '{spec.loss['name']}' needs a classification task; dataset is {data.task} (use mse)"), "base.loss")
        for i, aug in enumerate(spec.augment):
            try:
                AUGMENTATIONS.create(aug, dataset=data)
            except Exception as err:  # noqa: BLE001
                raise fail(err, f"base.augment.{i}") from None
