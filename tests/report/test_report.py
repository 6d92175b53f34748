"""The HTML report: files on disk, escaping of every stored string, tables that round-trip."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablab.analysis import aggregate, select_final
from ablab.report import write_report
from ablab.report.figures import variant_colours
from ablab.report.tables import format_mean_sd
from fakestore import FakeStore, parse_html as parse, read_csv_exact

SCRIPT_LABEL = "<script>alert(1)</script>"
IMG_LABEL = '<img src=x onerror="window.__pwned=1">'
EVIL = f"{SCRIPT_LABEL} {IMG_LABEL}"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "loop.py", line 3, in train\n'
    f"RuntimeError: CUDA out of memory {IMG_LABEL}"
)




def _curve(epochs: int, start: float, end: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    return np.linspace(start, end, epochs + 1) + rng.normal(0, noise, epochs + 1)


def make_study(tmp_path: Path, labels=("optimizer=adam, lr=0.001", "optimizer=sgd, lr=0.1", EVIL),
               selection: str = "best", epochs: int = 4) -> FakeStore:
    """Three seeds per variant; the second variant has a diverged seed, the third a failed one."""
    rng = np.random.default_rng(0)
    run_rows, metric_rows = [], []
    for v, label in enumerate(labels):
        for rep in range(3):
            run = f"r{v}{rep}"
            status = {(1, 2): "diverged", (2, 1): "failed"}.get((v, rep), "done")
            error = TRACEBACK if status == "failed" else None
            run_rows.append((run, label, rep, status, {"optimizer.name": label, "optimizer.lr": 0.1 * v},
                             error, 1.5, "cpu", "0.1.0+abc"))
            if status == "failed":
                continue
            stop = 2 if status == "diverged" else epochs
            series = {
                ("train", "loss"): _curve(epochs, 2.0, 0.3 + 0.1 * v, 0.05, rng),
                ("val", "loss"): _curve(epochs, 2.0, 0.4 + 0.1 * v, 0.05, rng),
                ("val", "accuracy"): _curve(epochs, 0.1, 0.9 - 0.1 * v, 0.02, rng),
                ("test", "accuracy"): _curve(epochs, 0.1, 0.88 - 0.1 * v, 0.02, rng),
                ("test", "loss"): _curve(epochs, 2.0, 0.45 + 0.1 * v, 0.05, rng),
            }
            for (split, name), values in series.items():
                for epoch in range(stop + 1):
                    value = values[epoch]
                    if status == "diverged" and epoch == stop:
                        value = float("inf") if name == "loss" else float("nan")
                    metric_rows.append((run, epoch * 10, epoch, split, name, float(value)))
            for step in range(1, stop * 10, 5):
                metric_rows.append((run, step, step // 10 + 1, "batch", "loss", 2.0 / step))
    runs = pd.DataFrame(run_rows, columns=["run", "label", "replicate", "status", "axes", "error",
                                           "duration_s", "device", "code_version"])
    metrics = pd.DataFrame(metric_rows, columns=["run", "step", "epoch", "split", "name", "value"])
    study = {
        "name": f"demo {SCRIPT_LABEL}",
        "description": f"Optimizers compared & {IMG_LABEL}",
        "file": "studies/demo/<small>.yaml",
        "spec": {"name": "demo", "grid": {"optimizer.name": [EVIL, "sgd"]}, "seeds": {"replicates": 3}},
        "report": {"selection": selection, "select_on": "val.accuracy",
                   "metrics": ["test.accuracy", "test.loss", "test.mse"],
                   "curves": ["train.loss", "val.accuracy", "batch.loss", "val.mse"]},
    }
    return FakeStore(tmp_path / "study", study, runs, metrics)




@pytest.fixture(scope="module")
def report(tmp_path_factory):
    store = make_study(tmp_path_factory.mktemp("report"))
    return store, write_report(store)


def test_writes_page_figures_and_tables(report):
    store, result = report
    out = store.path / "report"
    assert result.path == out / "index.html" and result.path.is_file()
    assert (out / "tables" / "final.csv").is_file() and (out / "tables" / "final.md").is_file()
    assert len(result.figures) == 3  # val.mse was never recorded
    assert all(p.parent == out / "figures" for p in result.figures)


def test_every_image_exists_and_is_png(report):
    store, result = report
    tags = parse(result.path.read_text(encoding="utf-8")).tags
    srcs = [attrs["src"] for tag, attrs in tags if tag == "img"]
    assert len(srcs) == 3
    for src in srcs:
        path = result.path.parent / src
        assert path.is_file(), src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.resolve().is_relative_to((result.path.parent / "figures").resolve())


def test_stored_strings_are_escaped(report):
    _, result = report
    page = result.path.read_text(encoding="utf-8")
    assert html.escape(SCRIPT_LABEL) in page
    assert html.escape(IMG_LABEL) in page
    parsed = parse(page)
    assert [t for t, _ in parsed.tags if t == "script"] == []
    assert [a for _, a in parsed.tags if any(k.startswith("on") for k in a)] == []
    assert all(a["src"].startswith("figures/") for t, a in parsed.tags if t == "img")
    text = "".join(parsed.text)
    assert EVIL in text  # shown literally, as text
    assert "studies/demo/<small>.yaml" in text and "Optimizers compared &" in text


def test_page_states_rule_counts_failures_and_spec(report):
    _, result = report
    text = "".join(parse(result.path.read_text(encoding="utf-8")).text)
    assert "epoch with best val.accuracy" in text
    assert "mean ± SD" in text and "ddof=1" in text
    assert "runs9 (done 7, diverged 1, failed 1)" in text
    assert f"RuntimeError: CUDA out of memory {IMG_LABEL}" in text  # the error's last line
    assert 'File "loop.py", line 3' in text  # the full traceback, inside <details>
    assert "non-finite values at epoch 2" in text
    assert "test.mse" in text and "Not recorded" in text
    assert "optimizer.name:" in text and "replicates: 3" in text  # the spec as YAML
    assert "optimizer.lr = 0.1" in text


def test_details_hold_the_traceback(report):
    _, result = report
    page = result.path.read_text(encoding="utf-8")
    assert "<details><summary>traceback</summary><pre>Traceback (most recent call last):" in page


def test_csv_round_trips_to_the_same_numbers(report):
    store, result = report
    expected = aggregate(select_final(store.metrics(), store.runs(), "best", "val.accuracy"))
    csv = read_csv_exact(result.path.parent / "tables" / "final.csv")
    assert list(csv["label"]) == list(expected["label"])
    for column in ["n", "n_diverged", "n_failed", "test.accuracy.mean", "test.accuracy.sd", "test.loss.mean",
                   "test.loss.sd", "test.loss.n"]:
        np.testing.assert_array_equal(csv[column].to_numpy(float), expected[column].to_numpy(float), column)
    assert set(csv["selection"]) == {"epoch with best val.accuracy (highest)"}
    assert list(csv["n_diverged"]) == [0, 1, 0] and list(csv["n_failed"]) == [0, 0, 1]


def test_final_csv_keeps_17_digit_values_of_a_single_seed(tmp_path):
    """One finished seed: mean = its value exactly (17 significant digits here), SD empty, n = 1."""
    store = make_study(tmp_path, labels=("a", "b"), selection="final")
    values = {"a": 0.1 + 0.2, "b": 1.0000000000000002}  # 0.30000000000000004, 1.0000000000000002
    keep = store._runs["replicate"] == 0
    store._runs = store._runs[keep]
    metrics = store._metrics[store._metrics["run"].isin(store._runs["run"])].copy()
    last = (metrics["epoch"] == 4) & (metrics["split"] == "test") & (metrics["name"] == "loss")
    metrics.loc[last, "value"] = metrics.loc[last, "run"].map({"r00": values["a"], "r10": values["b"]})
    store._metrics = metrics
    path = write_report(store).path.parent / "tables" / "final.csv"
    text = path.read_text(encoding="utf-8")
    assert "0.30000000000000004" in text and "1.0000000000000002" in text
    csv = read_csv_exact(path).set_index("label")
    for label, value in values.items():
        assert csv.loc[label, "test.loss.mean"] == value and csv.loc[label, "test.loss.n"] == 1
        assert np.isnan(csv.loc[label, "test.loss.sd"])


def test_table_text_for_the_terminal(report):
    store, result = report
    agg = aggregate(select_final(store.metrics(), store.runs(), "best", "val.accuracy")).set_index("label")
    text = result.table_text
    assert "Selection: epoch with best val.accuracy" in text
    mean, sd = agg.loc["optimizer=adam, lr=0.001", ["test.accuracy.mean", "test.accuracy.sd"]]
    assert format_mean_sd(mean, sd, 3, 3) in text
    lines = [line for line in text.splitlines() if line.startswith("optimizer=sgd")]
    assert len(lines) == 1 and lines[0].split()[-3:] == ["2", "1", "0"]  # n, diverged, failed
    md = (result.path.parent / "tables" / "final.md").read_text(encoding="utf-8")
    assert "| variant | test.accuracy | test.loss | n | diverged | failed |" in md


def test_final_selection_rule_is_stated(tmp_path):
    result = write_report(make_study(tmp_path, selection="final"))
    assert "Selection: final epoch." in result.table_text
    assert "final epoch" in result.path.read_text(encoding="utf-8")


def test_awkward_labels_draw(tmp_path):
    """``$`` would start mathtext and a leading ``_`` hides a legend entry; both must still draw."""
    result = write_report(make_study(tmp_path, labels=("cost=$5 $x$", "_hidden", "a|b")))
    assert len(result.figures) == 3
    assert r"a\|b" in (result.path.parent / "tables" / "final.md").read_text(encoding="utf-8")


def test_rewrite_removes_stale_figures(tmp_path):
    store = make_study(tmp_path)
    write_report(store)
    store._study["spec"]["report"]["curves"] = ["train.loss"]
    result = write_report(store)
    assert sorted(p.name for p in (result.path.parent / "figures").glob("*.png")) == [result.figures[0].name]


def test_report_of_a_study_that_has_not_started(tmp_path):
    store = make_study(tmp_path)
    store._runs = store._runs.assign(status="pending", error=None)
    store._metrics = store._metrics.iloc[0:0]
    result = write_report(store)
    assert result.figures == []
    text = "".join(parse(result.path.read_text(encoding="utf-8")).text)
    assert "pending 9" in text and "not recorded" in text


def test_matplotlib_global_state_untouched(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    write_report(make_study(tmp_path))
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures


@pytest.mark.parametrize("mean, sd, n_values, n, text", [
    (0.87403, 0.033891, 3, 3, "0.874 ± 0.034"),
    (0.68, 0.00094944, 2, 2, "0.68000 ± 0.00095"),
    (123.456, 12.3, 3, 3, "123.5 ± 12.3"),  # SE 7.1: one decimal
    (0.5, float("nan"), 1, 1, "0.5000 ± —"),
    (0.5, 0.1, 2, 3, "0.500 ± 0.100 (n=2)"),  # SE 0.071
    (float("nan"), float("nan"), 0, 0, "—"),
    (2.5e-5, 1.2e-6, 3, 3, "0.00002500 ± 0.00000120"),  # a lone cell; a column of such is scientific
])
def test_mean_sd_formatting(mean, sd, n_values, n, text):
    assert format_mean_sd(mean, sd, n_values, n) == text


def test_colours_are_distinct_and_stable():
    labels = [f"v{i}" for i in range(30)]
    colours = variant_colours(labels + labels[:3])
    assert len(colours) == 30 and len(set(colours.values())) == 30
    assert variant_colours(["b", "a"])["b"] == variant_colours(["b", "c"])["b"]

