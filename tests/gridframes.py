"""A made-up optimizer × lr × wd × SAM grid with 3 repeats and known means, as the store's frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablab.spec import make_label

LRS = [0.1, 0.01, 0.001]
WDS = [0.0, 1e-4]
SAMS = [None, {"rho": 0.05}]
OFFSETS = [-0.1, 0.0, 0.3]  # per replicate: mean offset 0.0667, SD known


def known_value(opt: str, lr: float, wd: float, sam, rep: int) -> float:
    """A made-up test loss with a known mean per cell: best at adam, lr 0.01, wd 1e-4, no SAM."""
    base = {0.1: 2.0, 0.01: 1.0, 0.001: 1.5}[lr] + (0.5 if opt == "sgd" else 0.0)
    base += 0.2 if sam else 0.0
    base -= 0.05 if wd else 0.0
    return base + OFFSETS[rep] * (1 + 10 * lr)  # spread differs per lr, so Welch ≠ Student


def make_frames(diverge: tuple | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """per_run and runs frames as select_final and Store.runs return them (the columns used)."""
    runs, per_run = [], []
    for opt in ("sgd", "adam"):
        for lr in LRS:
            for wd in WDS:
                for sam in SAMS:
                    axes = {"optimizer.name": opt, "optimizer.lr": lr, "optimizer.weight_decay": wd, "sam": sam}
                    label = make_label(axes)
                    for rep in range(3):
                        run = f"{opt}-{lr}-{wd}-{bool(sam)}-{rep}"
                        status = "diverged" if diverge == (opt, lr, wd, bool(sam), rep) else "done"
                        value = np.nan if status == "diverged" else known_value(opt, lr, wd, sam, rep)
                        spec = {"optimizer": {"name": opt, "lr": lr, "weight_decay": wd}, "sam": sam,
                                "weight_decay": {"value": 0.0, "mode": "l2"}}
                        runs.append({"run": run, "label": label, "axes": axes, "status": status, "spec": spec,
                                     "info": {"steps": 10, "gradient_evaluations": 10}})
                        per_run.append({"run": run, "label": label, "replicate": rep, "status": status,
                                        "epoch": 5, "test.loss": value, "test.accuracy": -value})
    return pd.DataFrame(per_run), pd.DataFrame(runs)
