"""The obesity dataset: the UCI/Kaggle CSV layout, ordinal targets, dropped columns, clear layout errors."""

from __future__ import annotations

import csv

import pytest
import torch

from ablab.data.obesity import CLASSES, FEATURES
from ablab.errors import DataError, SpecError
from ablab.registry import DATASETS, MODELS
from obesity_csv import HEADER, write_obesity_csv


@pytest.fixture
def obesity_csv(tmp_path):
    return write_obesity_csv(tmp_path / "ObesityDataSet_raw_and_data_sinthetic.csv", n=63)


def _original_classes(path) -> dict[tuple[str, str], str]:
    """(Age, Height) → class name as written in the file, to find each example again."""
    with open(path) as f:
        return {(r["Age"], r["Height"]): r["NObeyesdad"] for r in csv.DictReader(f)}


def test_regression_target_is_the_ordinal_class_index_unstandardized(obesity_csv):
    data = DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "regression"})
    assert data.task == "regression" and data.out_dim == 1
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 44, "val": 6, "test": 13}
    y = torch.cat([s.y for s in data.splits.values()]).reshape(-1)
    assert y.dtype == torch.float32 and sorted(y.unique().tolist()) == list(range(7))
    assert torch.bincount(y.long()).tolist() == [9] * 7  # 63 rows, the 7 classes in turn
    assert data.meta["classes"] == list(CLASSES) and "not standardized" in data.meta["target_kind"]


def test_targets_follow_the_class_order_not_the_alphabet(obesity_csv):
    # alphabetically Insufficient_Weight < Normal_Weight < Obesity_Type_I …; the index must be ordinal
    data = DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "regression",
                            "drop": []})
    names = data.meta["features"]
    age, height = names.index("Age"), names.index("Height")
    stats = data.meta["standardized"]
    col = stats["columns"]
    truth = _original_classes(obesity_csv)
    x, y = data.splits["train"].x, data.splits["train"].y.reshape(-1)
    for row, target in zip(x[:10], y[:10]):
        raw = [float(row[i]) * stats["std"][col.index(i)] + stats["mean"][col.index(i)] for i in (age, height)]
        key = min(truth, key=lambda k: abs(float(k[0]) - raw[0]) + abs(float(k[1]) - raw[1]))
        assert CLASSES[int(target)] == truth[key]


def test_classification_has_seven_classes_and_the_same_split(obesity_csv):
    reg = DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "regression"})
    cls = DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "classification"})
    assert cls.task == "classification" and cls.out_dim == 7 and cls.splits["train"].y.dtype == torch.int64
    for key in ("train", "val", "test"):
        assert torch.equal(cls.splits[key].x, reg.splits[key].x)
        assert torch.equal(cls.splits[key].y.float(), reg.splits[key].y.reshape(-1))


def test_weight_is_dropped_by_default_and_features_are_one_hot(obesity_csv):
    data = DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "regression"})
    names = data.meta["features"]
    assert "Weight" not in names and "Height" in names and "Gender=Male" in names
    assert data.in_shape == (len(names),)
    kept = DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "regression", "drop": []})
    assert "Weight" in kept.meta["features"] and kept.in_shape[0] == data.in_shape[0] + 1
    # numeric columns standardized with training statistics
    train = data.splits["train"].x[:, names.index("Age")]
    assert abs(float(train.mean())) < 1e-5 and float(train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)


def test_mlp_takes_tabular_input(obesity_csv):
    data = DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "regression"})
    model = MODELS.create({"name": "mlp", "widths": [16, 8]}, in_shape=data.in_shape, out_dim=data.out_dim)
    x = data.splits["train"].x[:5]
    assert x.shape == (5, data.in_shape[0]) and model(x).shape == (5, 1)


def test_a_missing_column_is_named(tmp_path):
    header = [c if c != "FAVC" else "favc" for c in HEADER]
    path = write_obesity_csv(tmp_path / "o.csv", header=header)
    with pytest.raises(DataError, match=r"not the obesity layout.*missing column 'FAVC'"):
        DATASETS.create({"name": "obesity", "path": str(path), "target": "regression"})


def test_unknown_class_and_unknown_drop_are_clear_errors(tmp_path, obesity_csv):
    text = obesity_csv.read_text().replace("Obesity_Type_III", "Obesity_Type_IV")
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(DataError, match="'Obesity_Type_IV'; expected one of Insufficient_Weight"):
        DATASETS.create({"name": "obesity", "path": str(bad), "target": "regression"})
    with pytest.raises(DataError, match="drop names 'BMI'"):
        DATASETS.create({"name": "obesity", "path": str(obesity_csv), "target": "regression", "drop": ["BMI"]})
    with pytest.raises(SpecError, match="target"):
        DATASETS.validate({"name": "obesity", "path": str(obesity_csv), "target": "ordinal"})
    assert len(FEATURES) == 16
