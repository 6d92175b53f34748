"""Validation refuses what would fail every run: a device this machine lacks, a CSV holding inf."""

import numpy as np
import pandas as pd
import pytest
import torch

from ablab.cli import main
from conftest import tiny_study


def _validate(write_study, study, capsys) -> tuple[int, str, str]:
    path = write_study(study)
    code = main(["validate", str(path)])
    return code, capsys.readouterr().err, str(path)


def _machine(monkeypatch, cuda_devices: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_devices)


@pytest.mark.parametrize("device, cuda_devices, text", [
    ("cuda", 0, "no CUDA device"),
    ("cuda:0", 0, "no CUDA device"),
    ("cuda:2", 2, "has 2 CUDA device(s): cuda:0..cuda:1"),
    ("cuda:x", 1, "cuda:N with N a device number"),
])
def test_a_device_this_machine_lacks_is_one_spec_error(device, cuda_devices, text, monkeypatch, write_study, tmp_path,
                                                       capsys):
    _machine(monkeypatch, cuda_devices)
    study = tiny_study()
    study["base"]["device"] = device
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'study.yaml'}: base.device" in err and text in err, err
    assert not out.exists()


def test_a_device_in_a_grid_names_its_variant(monkeypatch, write_study, capsys):
    _machine(monkeypatch, 0)
    code, err, path = _validate(write_study, tiny_study(grid={"device": ["cpu", "cuda"]}), capsys)
    assert code == 2 and f"{path}: base.device" in err and "variant 'device=cuda'" in err, err


@pytest.mark.parametrize("device, cuda_devices", [("cpu", 0), ("auto", 0), ("cuda", 1), ("cuda:1", 2)])
def test_a_device_the_machine_has_passes(device, cuda_devices, monkeypatch, write_study, capsys):
    _machine(monkeypatch, cuda_devices)
    study = tiny_study()
    study["base"]["device"] = device
    code, err, _ = _validate(write_study, study, capsys)
    assert code == 0, err


def test_a_csv_with_inf_fails_validation(write_study, tmp_path, capsys):
    table = pd.DataFrame({"a": np.linspace(0, 1, 40), "b": np.arange(40.0), "y": np.arange(40) % 2})
    table.loc[7, "b"] = np.inf
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    study = tiny_study()
    study["base"]["data"] = {"name": "csv", "path": str(csv), "target": "y", "task": "classification"}
    code, err, path = _validate(write_study, study, capsys)
    assert code == 2 and f"{path}: base.data" in err, err
    assert "infinite value inf in column 'b'" in err and "data row 8" in err, err
