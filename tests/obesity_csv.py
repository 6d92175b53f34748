"""A small file in the layout of ObesityDataSet_raw_and_data_sinthetic.csv (made-up people, not real data)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HEADER = [
    "Gender", "Age", "Height", "Weight", "family_history_with_overweight", "FAVC", "FCVC", "NCP",
    "CAEC", "SMOKE", "CH2O", "SCC", "FAF", "TUE", "CALC", "MTRANS", "NObeyesdad",
]
CLASSES = [
    "Insufficient_Weight", "Normal_Weight", "Overweight_Level_I", "Overweight_Level_II",
    "Obesity_Type_I", "Obesity_Type_II", "Obesity_Type_III",
]
BMI = [17.0, 22.0, 26.0, 28.5, 32.0, 37.0, 42.0]  # a BMI inside each class


def write_obesity_csv(path: Path, n: int = 60, seed: int = 0, header: list[str] | None = None) -> Path:
    """``n`` rows, classes in turn (row i has class i mod 7), Weight = BMI · Height²."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    often = ["no", "Sometimes", "Frequently", "Always"]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header or HEADER)
        for i in range(n):
            k = i % len(CLASSES)
            height = float(rng.uniform(1.5, 1.95))
            row = [
                rng.choice(["Female", "Male"]), round(float(rng.uniform(14, 61)), 6), round(height, 6),
                round(BMI[k] * height**2 + float(rng.normal(0, 1)), 6), rng.choice(["yes", "no"]),
                rng.choice(["yes", "no"]), round(float(rng.uniform(1, 3)), 6), round(float(rng.uniform(1, 4)), 6),
                rng.choice(often), rng.choice(["yes", "no"]), round(float(rng.uniform(1, 3)), 6),
                rng.choice(["yes", "no"]), round(float(rng.uniform(0, 3)), 6), round(float(rng.uniform(0, 2)), 6),
                rng.choice(often[:3]),
                rng.choice(["Public_Transportation", "Walking", "Automobile", "Motorbike", "Bike"]),
                CLASSES[k],
            ]
            out.writerow(row)
    return path
