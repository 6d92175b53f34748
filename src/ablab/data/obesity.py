"""Obesity levels (Palechor & de la Hoz Manotas 2019; UCI id 544, Kaggle): 2,111 people, 16 features.

The file is ``ObesityDataSet_raw_and_data_sinthetic.csv`` as UCI and Kaggle ship it: the 16
feature columns below and the target ``NObeyesdad``, one of 7 weight classes. Features go
through the ``csv`` loader's machinery (categoricals one-hot, numeric columns standardized with
training-split statistics, fixed split seeds). The target is the class, or for ``regression``
its ordinal index 0..6 in ``CLASSES`` order, left unstandardized so an MSE is in squared
class steps (the "Generalization Boosts" slides regress it and report test MSEs of 0.85–3.6).
"""

from __future__ import annotations

from typing import Literal

import torch

from ablab.data.base import Dataset, Split
from ablab.data.datasets import load_csv
from ablab.data.formats import ExistingPath, read_csv, require_file
from ablab.errors import DataError
from ablab.registry import DATASETS

FEATURES = (
    "Gender", "Age", "Height", "Weight", "family_history_with_overweight", "FAVC", "FCVC", "NCP",
    "CAEC", "SMOKE", "CH2O", "SCC", "FAF", "TUE", "CALC", "MTRANS",
)
TARGET = "NObeyesdad"
CLASSES = (  # ordinal: from underweight to the heaviest obesity class
    "Insufficient_Weight", "Normal_Weight", "Overweight_Level_I", "Overweight_Level_II",
    "Obesity_Type_I", "Obesity_Type_II", "Obesity_Type_III",
)
TEST_FRACTION, VAL_FRACTION = 0.2, 0.1  # fixed, so every study of this data tests on the same 422 people
FILE_NAME = "ObesityDataSet_raw_and_data_sinthetic.csv"


@DATASETS.register("obesity")
def load_obesity(
    path: ExistingPath,
    target: Literal["classification", "regression"],
    drop: list[str] = ["Weight"],
) -> Dataset:
    """Obesity levels CSV (UCI/Kaggle): 16 features, 7 ordered classes or their index as a regression target.

    ``drop`` removes feature columns (the slides drop Weight: with Height it gives the BMI that
    defines the classes). Splits: 20 % test, 10 % validation, fixed seeds.
    """
    path = require_file(path, f"the obesity CSV file ({FILE_NAME})")
    columns = [str(c) for c in read_csv(path).columns]
    missing = [c for c in (*FEATURES, TARGET) if c not in columns]
    if missing:
        raise DataError(f"{path}: not the obesity layout ({FILE_NAME}): missing column "
                        f"{', '.join(map(repr, missing))}; expected {', '.join((*FEATURES, TARGET))}")
    unknown = [c for c in drop if c not in FEATURES]
    if unknown:
        raise DataError(f"{path}: drop names {', '.join(map(repr, unknown))}, not a feature column; "
                        f"the features are {', '.join(FEATURES)}")
    table = load_csv(path, target=TARGET, task="classification", features=list(FEATURES), drop=list(drop),
                     test_fraction=TEST_FRACTION, val_fraction=VAL_FRACTION, standardize_target=False)

    found = table.meta["classes"]  # the csv loader sorts class names; map them onto CLASSES' order
    strange = [c for c in found if c not in CLASSES]
    if strange:
        raise DataError(f"{path}: column '{TARGET}' has value {', '.join(map(repr, strange))}; "
                        f"expected one of {', '.join(CLASSES)}")
    order = torch.tensor([CLASSES.index(c) for c in found])
    regression = target == "regression"
    splits = {}
    for key, split in table.splits.items():
        index = order[split.y]
        splits[key] = Split(split.x, index.to(torch.float32)[:, None] if regression else index)
    meta = {**table.meta, "source": str(path), "classes": list(CLASSES), "target": TARGET,
            "target_kind": "ordinal class index 0..6, not standardized" if regression else "class",
            "dropped": list(drop)}
    return Dataset("obesity", splits, table.in_shape, 1 if regression else len(CLASSES),
                   "regression" if regression else "classification",
                   mean=table.mean, std=table.std, meta=meta).check()

