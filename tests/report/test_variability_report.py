"""The variability section on real stored studies, against numpy on the stored .npy files; edge cases."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from ablab.analysis.stored_variability import load_variant_logits, variability_table
from ablab.cli import main
from ablab.report import write_report
from ablab.store import Store
from fakestore import read_csv_exact

BASE = {
    "data": "digits",
    "model": {"name": "mlp", "widths": [16]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "epochs": 1,
    "batch_size": 64,
    "device": "cpu",
    "record": {"every_steps": 20, "eval_splits": ["test"], "evaluators": ["standard", "predictions"]},
}


def _run_and_report(write_study, tmp_path: Path, study: dict) -> Path:
    out = tmp_path / "r"
    assert main(["run", str(write_study(study)), "--out", str(out), "--threads", "1"]) == 0
    assert main(["report", str(out)]) == 0
    return out


def _direct(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The five metrics by plain loops over runs and pairs, from the files alone."""
    acc = np.array([100.0 * np.mean(z.argmax(1) == labels) for z in logits])
    z64 = logits.astype(np.float64)
    ce = np.array([np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]) for z in z64])
    pairs = list(itertools.combinations(range(len(logits)), 2))
    return {
        "acc_sd": np.sqrt(np.mean((acc - acc.mean()) ** 2)),
        "loss_sd": np.sqrt(np.mean((ce - ce.mean()) ** 2)),
        "disagreement": np.mean([100.0 * np.mean(logits[i].argmax(1) != logits[j].argmax(1)) for i, j in pairs]),
        # scipy's ρ: average ranks on ties (small MLPs do tie: examples with every hidden unit at 0)
        "spearman": np.mean([spearmanr(logits[i].ravel(), logits[j].ravel())[0] for i, j in pairs]),
        "ensemble_delta": np.mean([100.0 * np.mean((logits[i] + logits[j]).argmax(1) == labels)
                                   - (acc[i] + acc[j]) / 2 for i, j in pairs]),
    }


def _direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Biased linear CKA from the paper's formula: tr(KHLH) / √(tr(KHKH) tr(LHLH)), K = XXᵀ."""
    h = np.eye(len(x)) - 1.0 / len(x)
    k, l = x.astype(np.float64) @ x.T.astype(np.float64), y.astype(np.float64) @ y.T.astype(np.float64)
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_the_variability_table_equals_numpy_on_the_stored_files(write_study, tmp_path):
    record = {**BASE["record"], "evaluators": ["standard", "predictions",
                                              {"name": "activations", "layers": ["act0", "fc1"], "examples": 60}]}
    study = {"name": "var", "base": {**BASE, "record": record}, "seeds": {"replicates": 4, "vary": ["init"]},
             "zip": {"label": ["fast", "slow"], "optimizer.lr": [0.1, 0.02]},
             "report": {"baselines": {"lower": "fast"}}}
    out = _run_and_report(write_study, tmp_path, study)
    table = read_csv_exact(out / "report" / "tables" / "variability.csv")
    store = Store.open(out)
    try:
        runs = store.runs()
        for label, group in runs.groupby("label"):
            files = [out / "runs" / r / "predictions_test_e0001.npy" for r in group["run"]]
            logits = np.stack([np.load(f) for f in files])
            labels = np.load(out / "runs" / group["run"].iloc[0] / "labels_test_e0001.npy")
            row = table[table["variant"] == label].iloc[0]
            assert row["n"] == 4 and row["left_out"] == 0
            for name, value in _direct(logits, labels).items():
                assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (label, name)
                assert np.isfinite(row[f"{name}_err"]) and row[f"{name}_err"] >= 0
            # the stored accuracy metric agrees with the logits and labels
            stored = store.final_values("test", "accuracy")
            assert row["accuracy_mean"] == pytest.approx(100 * np.mean([stored[r] for r in group["run"]]), rel=1e-9)
    finally:
        store.close()
    assert table.loc[table["variant"] == "fast", "vr_lower"].iloc[0] == 0.0
    assert np.isfinite(table.loc[table["variant"] == "slow", "vr_lower"].iloc[0])
    page = (out / "report" / "index.html").read_text()
    assert "Run-to-run variability" in page and "VR % vs fast" in page
    # CKA per layer: the mean over pairs of the paper's formula on the stored activation files
    from ablab.artifacts import load_npz

    cka = read_csv_exact(out / "report" / "tables" / "cka.csv")
    assert sorted(zip(cka["variant"], cka["layer"])) == [
        ("fast", "act0"), ("fast", "fc1"), ("slow", "act0"), ("slow", "fc1")]
    for label, group in runs.groupby("label"):
        acts = [load_npz(str(out / "runs" / r / "activations_test_e0001.npz"))[0] for r in group["run"]]
        for layer in ("act0", "fc1"):
            expected = np.mean([_direct_cka(a[layer], b[layer]) for a, b in itertools.combinations(acts, 2)])
            row = cka[(cka["variant"] == label) & (cka["layer"] == layer)].iloc[0]
            assert row["n"] == 4 and row["examples"] == 60
            assert row["cka"] == pytest.approx(expected, rel=1e-9)
            assert 0 < row["cka_debiased"] <= 1 and row["cka_err"] >= 0
    assert "Representation similarity (linear CKA)" in page and (out / "report" / "figures" / "cka.png").is_file()
    # both sections read the store's artifact index once between them; a second report writes the same tables
    before = {name: (out / "report" / "tables" / name).read_bytes() for name in ("variability.csv", "cka.csv")}
    store = Store.open(out)
    try:
        counting = _CountingIndex(store)
        write_report(counting)
    finally:
        store.close()
    assert counting.index_reads == 1
    assert before == {name: (out / "report" / "tables" / name).read_bytes() for name in before}


class _CountingIndex:
    """A store that counts how often the whole artifact index is read."""

    def __init__(self, store):
        self._store, self.index_reads = store, 0

    def artifacts(self, run=None):
        self.index_reads += run is None
        return self._store.artifacts(run)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_one_replicate_has_n_1_and_no_sd(write_study, tmp_path):
    out = _run_and_report(write_study, tmp_path, {"name": "one", "base": BASE, "seeds": {"replicates": 1}})
    table = read_csv_exact(out / "report" / "tables" / "variability.csv")
    assert table["n"].tolist() == [1]
    assert np.isnan(table["acc_sd"].iloc[0]) and np.isnan(table["disagreement"].iloc[0])
    assert "n &lt; 2 has no SD" in (out / "report" / "index.html").read_text()


def test_the_onset_figure_reads_init_from_epochs(write_study, tmp_path):
    base = {**BASE, "epochs": 2, "record": {**BASE["record"], "checkpoints": {"epochs": [1]}}}
    study = {"name": "onset", "base": base, "seeds": {"replicates": 3, "vary": ["shuffle"]},
             "zip": {"label": ["scratch", "late"],
                     "init_from": [None, {"run": {"label": "scratch", "replicate": 0}, "epoch": 1}]}}
    out = _run_and_report(write_study, tmp_path, study)
    onset = read_csv_exact(out / "report" / "tables" / "variability_onset.csv")
    assert dict(zip(onset["variant"], onset["onset_epoch"])) == {"scratch": 0, "late": 1}
    table = read_csv_exact(out / "report" / "tables" / "variability.csv")
    for label in ("scratch", "late"):
        sd = table.loc[table["variant"] == label, "acc_sd"].iloc[0]
        assert onset.loc[onset["variant"] == label, "acc_sd"].iloc[0] == sd
    assert (out / "report" / "figures" / "variability_onset.png").stat().st_size > 0


class _Store:
    """Predictions per run as a store serves them: epochs, logits, labels."""

    def __init__(self, logits: dict[str, np.ndarray | None], labels: np.ndarray):
        self.logits, self.labels = logits, labels

    def prediction_epochs(self, run, split):
        return [] if self.logits[run] is None else [3]

    def load_predictions(self, run, split, epoch):
        return self.logits[run]

    def load_labels(self, run, split, epoch):
        return self.labels


def test_diverged_runs_are_left_out_and_named():
    import pandas as pd

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 20)
    good = {f"g{i}": rng.normal(size=(20, 3)).astype(np.float32) for i in range(3)}
    nan = good["g0"].copy()
    nan[4, 1] = np.nan
    store = _Store({**good, "nan": nan, "none": None}, labels)
    runs = pd.DataFrame({"run": list(store.logits), "label": "v", "status": ["done"] * 3 + ["diverged", "diverged"]})
    (variant,) = load_variant_logits(store, runs)
    assert variant.runs == ["g0", "g1", "g2"]
    assert variant.left_out == {"nan": "non-finite logits (diverged)", "none": "no predictions at epoch 3"}
    row = variability_table([variant], resamples=50).iloc[0]
    assert row["n"] == 3 and row["left_out"] == 2
    expected = _direct(np.stack(list(good.values())), labels)
    assert row["disagreement"] == pytest.approx(expected["disagreement"], rel=1e-12)


def test_kernels_on_the_cpu_are_named_as_without_effect(write_study, tmp_path):
    study = {"name": "kern", "base": BASE, "seeds": {"replicates": 3},
             "zip": {"label": ["kernels", "init", "shuffle+kernels"], "seeds.base": [100, 0, 0],
                     "seeds.vary": [["kernels"], ["init"], ["shuffle", "kernels"]]}}
    out = _run_and_report(write_study, tmp_path, study)
    table = read_csv_exact(out / "report" / "tables" / "variability.csv").set_index("variant")
    assert table["kernels_no_effect"].to_dict() == {"kernels": True, "init": False, "shuffle+kernels": True}
    # the kernels row: three runs of one computation on the CPU, exactly no spread
    assert table.loc["kernels", "acc_sd"] == 0 and table.loc["kernels", "loss_sd"] == 0
    assert table.loc["kernels", "disagreement"] == 0
    page = (out / "report" / "index.html").read_text()
    assert page.count(" †</td>") == 2
    assert ("† kernels: its runs use nondeterministic kernels (<code>deterministic: false</code>), which have no "
            "effect on cpu") in page
    assert "every seed is held, so its runs are the same computation and zero variability is expected" in page
    assert "† shuffle+kernels:" in page and "its variability comes from the seeds it varies alone" in page
