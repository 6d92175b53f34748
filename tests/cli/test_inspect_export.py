"""Reading a study from the command line and the API (issue 12): ``status --failed``, ``show``, a spec
file for its results, ``metrics(with_axes=True)``, ``export`` as CSV, Parquet and TensorBoard files."""

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablab.cli import main
from ablab.export import export_tensorboard, run_folder
from ablab.store import Store
from ablab.tfevents import crc32c, masked_crc32c
from conftest import tiny_study

STUDY = tiny_study(name="inspect", grid={"optimizer": [{"name": "sgd", "lr": 0.1, "momentum": 0.9},
                                                       {"name": "sgd", "lr": 0.1, "momentum": 0.5}]},
                   seeds={"replicates": 1})
STUDY["base"]["epochs"] = 1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study run from its folder into the default results/inspect; the momentum-0.5 run fails."""
    from ablab.train import objectives

    root = tmp_path_factory.mktemp("inspect")
    spec = root / "inspect.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(STUDY))
    real_step = objectives.StandardStep.step

    def flaky_step(self, model, forward, optimizer, *args):
        if optimizer.param_groups[0]["momentum"] == 0.5:
            raise RuntimeError("simulated crash in one variant")
        return real_step(self, model, forward, optimizer, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(objectives.StandardStep, "step", flaky_step)
        mp.chdir(root)
        assert main(["run", str(spec)]) == 1
    store = Store.open(root / "results" / "inspect")
    runs, metrics, wide = store.runs(), store.metrics(), store.metrics(with_axes=True)
    store.close()
    return root, spec, runs, metrics, wide


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_failed_prints_the_stored_traceback(study, capsys):
    root, _, runs, _, _ = study
    code, out, _ = _run(capsys, "status", str(root / "results" / "inspect"), "--failed")
    failed = runs[runs["status"] == "failed"].iloc[0]
    assert code == 0
    assert f"--- {failed['run']}  {failed['label']} #0  failed ---" in out
    assert "Traceback (most recent call last)" in out and "RuntimeError: simulated crash in one variant" in out
    done = runs[runs["status"] == "done"].iloc[0]
    assert f"--- {done['run']}" not in out  # only failed runs


def test_status_accepts_the_spec_file(study, capsys, monkeypatch):
    root, spec, _, _, _ = study
    monkeypatch.chdir(root)
    code, by_spec, _ = _run(capsys, "status", spec.name)
    code2, by_dir, _ = _run(capsys, "status", "results/inspect")
    assert code == code2 == 0 and by_spec == by_dir
    assert "1 done" in by_spec and "1 failed" in by_spec


def test_status_of_a_spec_without_results_is_one_error(tmp_path, write_study, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "status", str(write_study(tiny_study(name="never_run"))))
    assert code == 2 and "no results in results/never_run yet" in err


def test_show_prints_spec_final_metrics_and_error(study, capsys, monkeypatch):
    root, _, runs, metrics, _ = study
    done = runs[runs["status"] == "done"].iloc[0]
    code, out, _ = _run(capsys, "show", done["run"][:6], str(root / "results" / "inspect"))
    assert code == 0 and out.startswith(f"run {done['run']}: {done['label']} #0\nstatus: done")
    mine = metrics[metrics["run"] == done["run"]]
    for (split, name), rows in mine.groupby(["split", "name"]):
        last = rows.sort_values("step").iloc[-1]
        assert f"  {split}.{name} = {last['value']:.6g}  (epoch {last['epoch']}, step {last['step']})" in out
    assert '"momentum": 0.9' in out and "error:" not in out
    failed = runs[runs["status"] == "failed"].iloc[0]
    monkeypatch.chdir(root)  # without a directory: the study under results/ that holds the run
    code, out, _ = _run(capsys, "show", failed["run"])
    assert code == 0 and "status: failed" in out and "error:\nTraceback" in out and "simulated crash" in out


def test_show_of_an_unknown_run_is_one_error(study, capsys):
    root = study[0]
    code, _, err = _run(capsys, "show", "zzzz", str(root / "results" / "inspect"))
    assert code == 2 and "no run 'zzzz'" in err


def test_metrics_with_axes_carry_label_and_axis_columns(study):
    _, _, runs, metrics, wide = study
    assert len(wide) == len(metrics) > 0
    assert list(wide.columns[:6]) == list(metrics.columns)
    assert wide[list(metrics.columns)].equals(metrics)
    by_run = runs.set_index("run")
    for run, rows in wide.groupby("run"):
        assert set(rows["label"]) == {by_run.loc[run, "label"]} and set(rows["status"]) == {by_run.loc[run, "status"]}
        assert set(rows["optimizer"]) == {by_run.loc[run, "label"].split("=", 1)[1]}  # sgd(lr=0.1, momentum=0.9)


def test_export_csv_holds_every_metric_exactly(study, capsys, tmp_path):
    root, _, _, _, wide = study
    out = tmp_path / "m.csv"
    code, printed, _ = _run(capsys, "export", str(root / "results" / "inspect"), "--out", str(out))
    assert code == 0 and printed.startswith(f"{len(wide)} metric values -> ")
    back = pd.read_csv(out)
    assert list(back.columns) == list(wide.columns)
    assert np.array_equal(back["value"].to_numpy(), wide["value"].to_numpy())  # bitwise: 17 significant digits
    assert back.drop(columns="value").astype(str).equals(wide.drop(columns="value").astype(str))


def test_export_parquet(study, capsys, tmp_path):
    root, _, _, _, wide = study
    out = tmp_path / "m.parquet"
    argv = ["export", str(root / "results" / "inspect"), "--format", "parquet", "--out", str(out)]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "pip install -e '.[export]'" in err and not out.exists()
        return
    assert _run(capsys, *argv)[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), wide)


# ---- TensorBoard event files, read back with a decoder written here from the format's description

def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes) -> list[tuple[int, object]]:
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        out.append((number, value))
    return out


def _read_events(path: Path) -> list[dict]:
    data, i, events = path.read_bytes(), 0, []
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        assert _unmask(struct.unpack("<I", data[i + 8:i + 12])[0]) == _crc32c_bitwise(header)
        body = data[i + 12:i + 12 + length]
        assert _unmask(struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0]) == _crc32c_bitwise(body)
        i += 16 + length
        event = {"values": []}
        for number, value in _fields(body):
            if number == 1:
                event["wall_time"] = struct.unpack("<d", value)[0]
            elif number == 2:
                event["step"] = value
            elif number == 3:
                event["file_version"] = value.decode()
            elif number == 5:
                for _, v in _fields(value):
                    f = dict(_fields(v))
                    event["values"].append((f[1].decode(), struct.unpack("<f", f[2])[0]))
        events.append(event)
    return events


def test_crc32c_known_vectors():
    # RFC 3720 §B.4 and the usual check value of CRC-32C
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    data = bytes(range(256)) * 3
    assert crc32c(data) == _crc32c_bitwise(data)
    assert _unmask(masked_crc32c(data)) == crc32c(data)


def test_export_tensorboard_event_files(study, capsys, tmp_path):
    root, _, runs, metrics, _ = study
    code, out, _ = _run(capsys, "export", str(root / "results" / "inspect"), "--tensorboard", str(tmp_path / "tb"))
    assert code == 0 and out.startswith("1 runs -> ")  # the failed run recorded nothing
    done = runs[runs["status"] == "done"].iloc[0]
    files = list((tmp_path / "tb" / run_folder(done["label"], 0)).glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = _read_events(files[0])
    assert events[0]["file_version"] == "brain.Event:2" and events[0]["values"] == []
    got = sorted((tag, e["step"], value) for e in events[1:] for tag, value in e["values"])
    mine = metrics[metrics["run"] == done["run"]]
    want = sorted((f"{m.split}/{m.name}", int(m.step), float(np.float32(m.value))) for m in mine.itertuples())
    assert got == want and len(got) == len(mine)
    assert all(math.isclose(e["wall_time"], done["started"]) for e in events)
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    loss = [(s.step, s.value) for s in acc.Scalars("train/loss")]
    assert loss == [(step, value) for tag, step, value in want if tag == "train/loss"]


def test_the_parquet_hint_is_the_readme_s():
    """The missing-pyarrow message and the README give the same install command (issue 21)."""
    import re

    import ablab.export

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (command,) = set(re.findall(r"pip install -e '\.\[export\]'", readme))
    assert command in Path(ablab.export.__file__).read_text()


@pytest.mark.parametrize("label, replicate, folder", [
    ("optimizer=sgd(lr=0.05, momentum=0.9)", 0, "optimizer=sgd_lr=0.05,momentum=0.9_rep0"),
    ("model.norm=none, optimizer=adam(lr=0.001)", 2, "model.norm=none,optimizer=adam_lr=0.001_rep2"),
    ("data=a/b\\c; rm -rf ~ 'x' \"y\" $HOME `z` #1 &", 1, "data=a_b_c_rm_-rf_x_y_HOME_z_1_rep1"),
    ("λ=0.5", 0, "=0.5_rep0"), ("()", 3, "run_rep3"),
])
def test_tensorboard_folder_names_are_safe_in_a_shell(label, replicate, folder):
    import re

    assert run_folder(label, replicate) == folder
    assert re.fullmatch(r"[A-Za-z0-9._=,+-]+", folder)
    assert len(run_folder("x" * 1000, 0)) <= 130


def test_tensorboard_folders_of_labels_that_differ_only_in_left_out_characters(tmp_path):
    """Two variants whose safe names agree get the run id appended: no run's events land in another's folder."""
    class Stub:
        def runs(self):
            return pd.DataFrame({"run": ["aaaaaaaa11", "bbbbbbbb22"], "label": ["lr=(1)", "lr=[1]"],
                                 "replicate": [0, 0], "started": [1.0, 2.0]})

        def metrics(self):
            return pd.DataFrame({"run": ["aaaaaaaa11", "bbbbbbbb22"], "split": "train", "name": "loss",
                                 "value": [0.5, 0.25], "step": [1, 1]})

    store = Stub()
    written = export_tensorboard(store, tmp_path / "tb")
    assert sorted(p.parent.name for p in written) == ["lr=_1_rep0", "lr=_1_rep0_bbbbbbbb"]


def test_report_accepts_the_study_s_spec_file(study, capsys, monkeypatch):
    """`ablab report SPEC` reads results/<name>, as `ablab status SPEC` does (issue 21)."""
    root = study[0]
    monkeypatch.chdir(root)
    spec = next(root.glob("*.yaml"))
    code, out, err = _run(capsys, "report", str(spec.name))
    assert code == 0, err
    assert "report: results/inspect/report/index.html" in out
