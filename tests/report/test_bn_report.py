"""The norm-layer report section and the baseline Δ columns, on a fake store with known values."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.contour import ContourSet
from scipy import stats

from ablab.artifacts import NORM_PARAMS_FILE, RELU_SPARSITY_FILE, save_npz
from ablab.registry import REPORT_SECTIONS
from ablab.report import write_report
from ablab.report.context import ReportContext
from ablab.report.figures import BASELINE_COLOURS, curve_panels, line_widths, variant_colours
from ablab.report.norm_figures import colour_limits, contour_figure, contour_matrix
from ablab.report.numbers import column_format, format_p, format_value
from ablab.report.tables import resolve_baselines, split_label
from fakestore import FakeStore, parse_html as parse

EVIL = "<script>alert(1)</script>"
BASELINES = {"lower": "vanilla", "upper": "bn_gamma_beta"}
# final test accuracy per run; vanilla at lr ×10 diverges in every seed, bn_none has one finished seed
FINAL = {
    "vanilla, lr_scale=1": [0.80, 0.82, 0.85],
    "bn_gamma_beta, lr_scale=1": [0.90, 0.91, 0.95],
    "bn_beta, lr_scale=1": [0.88, 0.90, 0.86],
    f"{EVIL}, lr_scale=1": [0.70, 0.72, 0.71],
    "bn_none, lr_scale=1": [0.89, None, None],
    "vanilla, lr_scale=10": [None, None, None],
    "bn_gamma_beta, lr_scale=10": [0.70, 0.75, 0.80],
    "bn_beta, lr_scale=10": [0.60, 0.66, 0.61],
}
LAYERS = {"norm0": 4, "norm1": 3}




def norm_artifact(seed: int, affine: str, steps: int = 6) -> tuple[dict, dict]:
    """γ and β trajectories: linear from neutral to a final value; norm1 moves twice as far as norm0."""
    rng = np.random.default_rng(seed)
    arrays, layers = {"steps": np.arange(steps) * 5}, []
    learn = {"gamma": affine in ("gamma_beta", "gamma"), "beta": affine in ("gamma_beta", "beta")}
    t = np.linspace(0, 1, steps)[:, None]
    for k, (name, c) in enumerate(LAYERS.items()):
        end_g, end_b = 1 + (k + 1) * rng.uniform(-0.3, 0.3, c), (k + 1) * rng.uniform(-0.4, 0.4, c)
        arrays[f"{name}/gamma"] = (1 + t * (end_g - 1)) if learn["gamma"] else np.ones((steps, c))
        arrays[f"{name}/beta"] = (t * end_b) if learn["beta"] else np.zeros((steps, c))
        layers.append({"name": name, "features": c, "type": "AblatedBatchNorm2d", "learnable": learn})
    return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}, {"layers": layers}


def make_store(tmp_path: Path, probes: bool = True) -> FakeStore:
    """The fake BatchNorm study; without ``probes``, no γ/β or sparsity files: the norm and ReLU sections (their
    figures are most of the report's time) do not apply, for a test of what the tables say."""
    run_rows, metric_rows = [], []
    for v, (label, finals) in enumerate(FINAL.items()):
        family = split_label(label)[0]
        affine = {"bn_gamma_beta": "gamma_beta", "bn_beta": "beta", "bn_none": "none", EVIL: "gamma_beta"}.get(family)
        for rep, final in enumerate(finals):
            run = f"r{v}{rep}"
            status = "done" if final is not None else "diverged"
            run_rows.append((run, label, rep, status, {"label": label}, None))
            for epoch in range(3):
                acc = final if (epoch == 2 and final is not None) else 0.1 + 0.2 * epoch
                loss = 2.0 - 0.5 * epoch
                if status == "diverged" and epoch == 2:
                    acc, loss = float("nan"), float("inf")
                metric_rows += [(run, 10 * epoch, epoch, "test", "accuracy", acc),
                                (run, 10 * epoch, epoch, "train", "loss", loss)]
            directory = tmp_path / "study" / "runs" / run
            directory.mkdir(parents=True)
            if not probes:
                continue
            sparsity = np.clip(0.5 + 0.01 * np.arange(6)[:, None] * np.array([1, -1]), 0, 1)
            if status == "diverged":
                sparsity[-1] = np.nan
            (directory / RELU_SPARSITY_FILE).write_bytes(
                save_npz({"steps": np.arange(6) * 5, "sparsity": sparsity}, {"layers": ["act0", "act1"]}))
            if affine is not None:
                (directory / NORM_PARAMS_FILE).write_bytes(save_npz(*norm_artifact(100 * v + rep, affine)))
    runs = pd.DataFrame(run_rows, columns=["run", "label", "replicate", "status", "axes", "error"])
    metrics = pd.DataFrame(metric_rows, columns=["run", "step", "epoch", "split", "name", "value"])
    study = {"name": "bn", "file": "studies/bn.yaml", "spec": {"name": "bn"},
             "report": {"selection": "final", "metrics": ["test.accuracy", "train.loss"],
                        "curves": ["train.loss", "test.accuracy"], "baselines": BASELINES}}
    return FakeStore(tmp_path / "study", study, runs, metrics)




@pytest.fixture(scope="module")
def report(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("bn"))
    return store, write_report(store)


# ---- contour data ------------------------------------------------------------------------------

def test_contour_columns_are_features_sorted_by_final_value():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (7, 9))
    steps, order, matrix = contour_matrix(np.arange(7) * 5, values)
    assert np.all(np.diff(matrix[-1]) >= 0)  # the last row rises left to right
    np.testing.assert_array_equal(matrix, values[:, order])  # column j is feature order[j], every step
    assert sorted(order.tolist()) == list(range(9))
    np.testing.assert_array_equal(steps, np.arange(7) * 5)


def test_contour_of_a_diverged_run_sorts_by_its_last_finite_step():
    values = np.array([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [np.nan, 0.5, 0.2]])
    steps, order, matrix = contour_matrix(np.array([0, 5, 10]), values)
    assert order.tolist() == [1, 2, 0] and matrix.shape == (2, 3) and steps.tolist() == [0, 5]


def test_colour_limits_are_symmetric_around_the_neutral_value():
    assert colour_limits("gamma", [np.array([[1.0, 0.5]]), np.array([[1.2, 1.1]])]) == (0.5, 1.5)
    assert colour_limits("beta", [np.array([[0.1, -0.3]]), np.array([[0.2]])]) == pytest.approx((-0.3, 0.3))
    lo, hi = colour_limits("gamma", [np.ones((3, 2))])  # frozen: a tiny range around 1, not a crash
    assert lo < 1 < hi


@pytest.mark.parametrize("param", ["gamma", "beta"])
def test_one_colour_scale_shared_by_all_layers(param):
    arrays, meta = norm_artifact(3, "gamma_beta")
    fig = contour_figure(arrays, meta, param, "title")
    sets = [c for ax in fig.axes for c in ax.collections if isinstance(c, ContourSet)]
    assert len(sets) == len(LAYERS)
    neutral = {"gamma": 1.0, "beta": 0.0}[param]
    span = max(np.abs(arrays[f"{name}/{param}"] - neutral).max() for name in LAYERS)
    for contour in sets:
        assert contour.norm.vmin == pytest.approx(neutral - span, rel=1e-5)
        assert contour.norm.vmax == pytest.approx(neutral + span, rel=1e-5)
    assert len({(c.norm.vmin, c.norm.vmax) for c in sets}) == 1
    assert len(fig.axes) == len(LAYERS) + 1  # the panels and one colour bar


def test_no_figure_for_a_parameter_no_layer_learns():
    assert contour_figure(*norm_artifact(0, "beta"), "gamma", "t") is None
    assert contour_figure(*norm_artifact(0, "beta"), "beta", "t") is not None


# ---- the section in the page -------------------------------------------------------------------

def test_section_is_in_the_page_and_every_image_exists(report):
    store, result = report
    page = result.path.read_text(encoding="utf-8")
    parsed = parse(page)
    text = "".join(parsed.text)
    assert "Normalization layers" in text and "Trajectory statistics" in text and "ReLU sparsity" in text
    headings = [part.split("</h2>", 1)[0] for part in page.split("<h2>")[1:]]
    assert headings[3:6] == ["Normalization layers: γ and β", "ReLU sparsity", "Diverged and failed runs"]
    srcs = [a["src"] for t, a in parsed.tags if t == "img"]
    for src in srcs:
        path = result.path.parent / src
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    contours = sorted(Path(s).name for s in srcs if "bn_contour" in s)
    labels = list(FINAL)
    expected = []
    for label, params in [("bn_gamma_beta, lr_scale=1", "gamma beta"), ("bn_beta, lr_scale=1", "beta"),
                          (f"{EVIL}, lr_scale=1", "gamma beta"), ("bn_none, lr_scale=1", ""),
                          ("bn_gamma_beta, lr_scale=10", "gamma beta"), ("bn_beta, lr_scale=10", "beta")]:
        expected += [f"bn_contour_{labels.index(label):02d}_r{rep:02d}_{p}.png"
                     for rep in range(len(FINAL[label])) for p in params.split()]
    assert contours == sorted(expected)  # every seed; none for vanilla (no BN) nor bn_none (nothing learned)
    folded = "".join(part.split("</details>", 1)[0] for part in page.split("<details>")[1:])
    for name in expected:  # the first seed on the page, the other seeds folded under it
        assert (f"figures/{name}" in folded) == ("_r00_" not in name), name
        assert f"<a href=\"figures/{name}\"" in page  # linked to the full-size PNG
    assert "figures/bn_sparsity.png" in srcs
    assert set(result.figures) >= {result.path.parent / s for s in srcs}


def test_section_escapes_labels(report):
    _, result = report
    page = result.path.read_text(encoding="utf-8")
    parsed = parse(page)
    assert [t for t, _ in parsed.tags if t == "script"] == []
    assert html.escape(EVIL) in page and EVIL in "".join(parsed.text)


def test_trajectory_table_is_mean_and_sd_over_finished_seeds(report):
    store, result = report
    summary = pd.read_csv(result.path.parent / "tables" / "trajectories.csv")
    row = summary[(summary["label"] == "bn_gamma_beta, lr_scale=1") & (summary["layer"] == "norm1")
                  & (summary["param"] == "beta")].iloc[0]
    v = list(FINAL).index("bn_gamma_beta, lr_scale=1")
    activities = [np.abs(norm_artifact(100 * v + rep, "gamma_beta")[0]["norm1/beta"][-1]).mean() for rep in range(3)]
    assert row["n"] == 3
    assert row["activity.mean"] == pytest.approx(np.mean(activities), rel=1e-5)
    assert row["activity.sd"] == pytest.approx(np.std(activities, ddof=1), rel=1e-4)
    assert row["crossings.mean"] == 0  # straight lines away from 0 never cross it
    frozen = summary[(summary["label"] == "bn_beta, lr_scale=1") & (summary["param"] == "gamma")]
    assert len(frozen) == 2 and not frozen["learnable"].any() and (frozen["activity.mean"] == 0).all()
    per_run = pd.read_csv(result.path.parent / "tables" / "trajectories_runs.csv")
    assert len(per_run) == 6 * 3 * 2 * 2  # every run with the probe (diverged ones too) × layers × params
    assert set(per_run.loc[per_run["label"] == "bn_none, lr_scale=1", "status"]) == {"done", "diverged"}
    assert set(summary.loc[summary["label"] == "bn_none, lr_scale=1", "n"]) == {1}  # finished seeds only
    page = result.path.read_text(encoding="utf-8")
    assert "frozen (variant, layer, parameter) rows are left out" in page


def test_sections_do_not_apply_without_probe_artifacts(tmp_path):
    store = make_store(tmp_path)
    for path in (tmp_path / "study" / "runs").rglob("*.npz"):
        path.unlink()
    ctx = ReportContext(store, tmp_path / "out")
    assert not REPORT_SECTIONS.get("norm_params")().applies(ctx)
    assert not REPORT_SECTIONS.get("relu_sparsity")().applies(ctx)
    result = write_report(store)
    text = "".join(parse(result.path.read_text(encoding="utf-8")).text)
    assert "Normalization layers" not in text and "ReLU sparsity" not in text
    assert not any("bn_" in p.name for p in result.figures + result.tables)


# ---- baselines: Δ columns, colours, panels -----------------------------------------------------

def _welch(a, b):
    return stats.ttest_ind(a, b, equal_var=False).pvalue


def test_delta_columns_and_welch_p_values(report):
    _, result = report
    csv = pd.read_csv(result.path.parent / "tables" / "final.csv").set_index("label")
    row = csv.loc["bn_beta, lr_scale=1"]
    lower, upper, mine = FINAL["vanilla, lr_scale=1"], FINAL["bn_gamma_beta, lr_scale=1"], FINAL["bn_beta, lr_scale=1"]
    assert row["baseline_lower"] == "vanilla, lr_scale=1" and row["baseline_upper"] == "bn_gamma_beta, lr_scale=1"
    assert row["test.accuracy.delta_lower"] == pytest.approx(np.mean(mine) - np.mean(lower))
    assert row["test.accuracy.p_lower"] == pytest.approx(_welch(mine, lower))
    assert row["test.accuracy.delta_upper"] == pytest.approx(np.mean(mine) - np.mean(upper))
    assert row["test.accuracy.p_upper"] == pytest.approx(_welch(mine, upper))
    # each rate has its own baselines; a baseline without finished runs gives no Δ
    fast = csv.loc["bn_beta, lr_scale=10"]
    assert fast["baseline_upper"] == "bn_gamma_beta, lr_scale=10"
    assert fast["test.accuracy.delta_upper"] == pytest.approx(np.mean(FINAL["bn_beta, lr_scale=10"]) - 0.75)
    assert np.isnan(fast["test.accuracy.delta_lower"])
    one = csv.loc["bn_none, lr_scale=1"]  # n = 1: a Δ but no test
    assert one["test.accuracy.delta_upper"] == pytest.approx(0.89 - np.mean(upper)) and np.isnan(one["test.accuracy.p_upper"])
    assert csv.loc["vanilla, lr_scale=1", "test.accuracy.delta_lower"] == 0


def test_delta_cells_in_page_and_terminal(report):
    _, result = report
    text = "".join(parse(result.path.read_text(encoding="utf-8")).text)
    assert "Δ vs lower" in text and "Δ vs upper" in text and "Welch's t-test" in text
    line = next(line for line in result.table_text.splitlines() if line.startswith("bn_beta, lr_scale=1 "))
    mine, lower = FINAL["bn_beta, lr_scale=1"], FINAL["vanilla, lr_scale=1"]
    delta = np.mean(mine) - np.mean(lower)
    se = np.sqrt(np.var(mine, ddof=1) / 3 + np.var(lower, ddof=1) / 3)
    csv = pd.read_csv(result.path.parent / "tables" / "final.csv").set_index("label").loc["bn_beta, lr_scale=1"]
    assert csv["test.accuracy.se_delta_lower"] == pytest.approx(se) and csv["test.accuracy.n_baseline_lower"] == 3
    holm = csv["test.accuracy.p_holm_lower"]
    assert csv["test.accuracy.p_lower"] <= holm <= 1
    # Δ to its column's precision (the median SE of the column's Δs), the raw and the Holm-adjusted p, and
    # the n of both sides in the Markdown copy; the terminal shows Δ and p, the page the rest in a hover
    table = pd.read_csv(result.path.parent / "tables" / "final.csv")
    column = column_format(table["test.accuracy.delta_lower"], table["test.accuracy.se_delta_lower"])
    shown = format_value(delta, se, sign=True, column=column)
    p = format_p(_welch(mine, lower))
    md = (result.path.parent / "tables" / "final.md").read_text(encoding="utf-8")
    assert f"{shown} (p={p}, Holm {format_p(holm)}; n=3 vs 3)" in md
    assert f"{shown} p={p}" in line
    page = result.path.read_text(encoding="utf-8")
    assert f"Holm-adjusted p = {format_p(holm)}; n = 3 vs 3" in page and f"lower: {shown} p={p}" in page
    assert "Holm–Bonferroni-adjusted over all" in result.table_text
    base = next(line for line in result.table_text.splitlines() if line.startswith("vanilla, lr_scale=1 "))
    assert "baseline" in base
    assert "| variant | test.accuracy | Δ vs lower | Δ vs upper | train.loss | Δ vs lower | Δ vs upper |" in md


def test_baselines_resolve_within_groups_or_by_name():
    labels = ["vanilla, lr_scale=1", "bn, lr_scale=1", "vanilla, lr_scale=10", "bn, lr_scale=10", "bn_beta, lr_scale=10"]
    got = resolve_baselines(labels, {"lower": "vanilla", "upper": "bn"})
    assert got["bn_beta, lr_scale=10"] == {"lower": "vanilla, lr_scale=10", "upper": "bn, lr_scale=10"}
    assert got["vanilla, lr_scale=1"]["lower"] == "vanilla, lr_scale=1"
    # a placement study: one vanilla shared by every group
    placed = ["vanilla", "bn, norm_at=first", "bn_g, norm_at=first", "bn, norm_at=last"]
    got = resolve_baselines(placed, {"lower": "vanilla", "upper": "bn"})
    assert got["bn_g, norm_at=first"] == {"lower": "vanilla", "upper": "bn, norm_at=first"}
    assert resolve_baselines(["a", "b"], {"lower": "nope"})["a"]["lower"] is None
    assert split_label("model.norm=batchnorm(affine=gamma, momentum=0.1), lr_scale=10") == (
        "model.norm=batchnorm(affine=gamma, momentum=0.1)", "lr_scale=10")


def test_baselines_have_fixed_colours_thick_lines_and_panels():
    labels = ["vanilla, lr_scale=1", "bn_gamma_beta, lr_scale=1", "bn_beta, lr_scale=1",
              "vanilla, lr_scale=10", "bn_gamma_beta, lr_scale=10", "bn_beta, lr_scale=10"]
    colours = variant_colours(labels, BASELINES)
    assert colours["vanilla, lr_scale=1"] == colours["vanilla, lr_scale=10"] == BASELINE_COLOURS["lower"]
    assert colours["bn_gamma_beta, lr_scale=10"] == BASELINE_COLOURS["upper"]
    assert colours["bn_beta, lr_scale=1"] == colours["bn_beta, lr_scale=10"]  # a family keeps its colour
    assert colours["bn_beta, lr_scale=1"] not in BASELINE_COLOURS.values()
    widths = line_widths(labels, BASELINES)
    assert widths["vanilla, lr_scale=10"] > widths["bn_beta, lr_scale=10"]
    assert curve_panels(labels, BASELINES) == {label: [split_label(label)[1]] for label in labels}
    placed = ["vanilla", "bn_gamma_beta, at=first", "bn_beta, at=first", "bn_gamma_beta, at=last", "bn_beta, at=last"]
    assert curve_panels(placed, BASELINES)["vanilla"] == ["at=first", "at=last"]
    # baselines naming whole labels: no panels, colours per label as before
    plain = ["a", "b", "c"]
    assert curve_panels(plain, {"lower": "a"}) is None
    assert variant_colours(plain, {"lower": "a"})["a"] == BASELINE_COLOURS["lower"]
    assert variant_colours(plain) == variant_colours(plain, {})


def test_a_baseline_that_names_nothing_is_stated(tmp_path):
    store = make_store(tmp_path, probes=False)
    store._study["spec"]["report"]["baselines"] = {"lower": "nope", "upper": "bn_gamma_beta"}
    result = write_report(store)
    assert "report.baselines.lower ('nope') compares nothing: 'nope' names no variant" in " ".join(result.table_text.split())
    csv = pd.read_csv(result.path.parent / "tables" / "final.csv")
    assert csv["test.accuracy.delta_lower"].isna().all() and csv["test.accuracy.delta_upper"].notna().any()
