"""The mixing report section: its numbers against a direct pandas computation, the example grid, when it shows."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats

from ablab.analysis.seeds import select_final
from ablab.analysis.mixing import THESIS_ERROR, error_table, row_column_pairs
from ablab.cli import main
from ablab.report.mixing_figure import LABEL_PX, label_anchor, tile_box, tile_label
from conftest import stored

ARMS = ["baseline", "mixup", "vertical_concat", "horizontal_concat", "random_rows", "random_columns", "bc_plus"]
STUDY = {
    "name": "mix_small",
    "base": {"data": {"name": "digits", "size": 16}, "model": {"name": "one_hidden_conv", "channels": 8},
             "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "epochs": 1, "batch_size": 64,
             "device": "cpu", "augment": [{"name": "random_crop", "padding": 2}, "normalize", "baseline"],
             "record": {"every_steps": 10, "eval_splits": ["test"]}},
    "zip": {"label": ARMS, "augment.2": ARMS},
    "seeds": {"replicates": 3},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    spec = root / "mix.yaml"
    spec.write_text(yaml.safe_dump(STUDY))
    out = root / "out"
    assert main(["run", str(spec), "--out", str(out), "--threads", "1", "--report"]) == 0
    return out


def _direct(out) -> pd.DataFrame:
    """Per label: the final test error % of every finished run, straight from the store's frames."""
    metrics, runs = stored(out)
    acc = metrics[(metrics.split == "test") & (metrics.name == "accuracy")]
    final = acc.sort_values("epoch").groupby("run").value.last()
    done = runs[runs.status == "done"]
    return pd.DataFrame({"label": done.label, "error": 100 * (1 - done.run.map(final))})


def test_error_table_matches_a_direct_computation(study):
    table = pd.read_csv(study / "report" / "tables" / "mixing.csv").set_index("label")
    errors = _direct(study)
    base = errors[errors.label == "baseline"].error.to_numpy()
    for label in ARMS:
        mine = errors[errors.label == label].error.to_numpy()
        row = table.loc[label]
        assert row.n == 3 == len(mine)
        assert row.error_mean == pytest.approx(mine.mean(), abs=1e-12)
        assert row.error_sd == pytest.approx(mine.std(ddof=1), abs=1e-12)
        if label == "baseline":
            assert math.isnan(row.delta) and math.isnan(row.p)
        else:
            assert row.delta == pytest.approx(mine.mean() - base.mean(), abs=1e-12)
            assert row.p == pytest.approx(stats.ttest_ind(mine, base, equal_var=False).pvalue, rel=1e-9)
    # sorted like the thesis: baseline, mixup, BC+, then by mean error, highest first
    assert list(table.index[:3]) == ["baseline", "mixup", "bc_plus"]
    rest = table.error_mean.iloc[3:].to_numpy()
    assert (np.diff(rest) <= 0).all()
    assert table.thesis_error.isna().all()  # digits: no thesis numbers


def test_row_column_pairs_match_a_direct_computation(study):
    pairs = pd.read_csv(study / "report" / "tables" / "mixing_row_column.csv")
    errors = _direct(study)
    assert list(zip(pairs.row_method, pairs.column_method)) == [("vertical_concat", "horizontal_concat"),
                                                                ("random_rows", "random_columns")]
    for r in pairs.itertuples():
        a = errors[errors.label == r.row_method].error.to_numpy()
        b = errors[errors.label == r.column_method].error.to_numpy()
        assert r.delta == pytest.approx(a.mean() - b.mean(), abs=1e-12)
        assert r.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    page = (study / "report" / "index.html").read_text()
    assert "Rows vs columns" in page and "vertical_concat vs horizontal_concat" in page


def test_thesis_column_for_cifar_matches_tables_2_1_and_2_2(study):
    metrics, runs = stored(study)
    per_run = select_final(metrics, runs)
    for dataset in ("cifar10", "cifar100"):
        fake = runs.assign(spec=[{**s, "data": {"name": dataset}} for s in runs.spec])
        table = error_table(per_run, fake).set_index("method")
        assert table.thesis_error.to_dict() == {m: THESIS_ERROR[dataset][m] for m in table.index}
    assert THESIS_ERROR["cifar10"]["vh_mixup"] == 3.8 and THESIS_ERROR["cifar100"]["baseline"] == 23.6
    assert len(THESIS_ERROR["cifar10"]) == len(THESIS_ERROR["cifar100"]) == 17
    assert not row_column_pairs(per_run, runs).empty


def test_example_grid_exists_and_the_baseline_tile_is_image_1(study):
    png = study / "report" / "figures" / "mixing_examples.png"
    assert png.is_file()
    page = (study / "report" / "index.html").read_text()
    assert "figures/mixing_examples.png" in page
    pixels = matplotlib.image.imread(png)
    scale = 96 // 16
    titles = ["image 1", "image 2", *ARMS]  # the page lists the tiles in this order
    assert "1. image 1; 2. image 2; 3. baseline; 4. mixup" in page
    one = pixels[tile_box(0, (16, 16), scale)]
    base = pixels[tile_box(titles.index("baseline"), (16, 16), scale)]
    two = pixels[tile_box(1, (16, 16), scale)]
    assert np.array_equal(base, one) and not np.array_equal(one, two)
    mixed = pixels[tile_box(titles.index("vertical_concat"), (16, 16), scale)]
    assert not np.array_equal(mixed, one)


def test_every_tile_is_labelled_with_its_arm_under_it(study):
    """Issue 21: the grid's tiles carry their number and arm in a band under them, never on their pixels."""
    pixels = matplotlib.image.imread(study / "report" / "figures" / "mixing_examples.png")[..., :3]
    titles = ["image 1", "image 2", *ARMS]
    scale = 96 // 16
    assert [tile_label(i, t) for i, t in enumerate(titles)][2:4] == ["3 baseline", "4 mixup"]
    assert tile_label(0, "x" * 40).endswith("…") and len(tile_label(0, "x" * 40)) == 20
    white = np.ones(3)
    for i in range(len(titles)):
        rows, cols = tile_box(i, (16, 16), scale)
        band = pixels[rows.stop: rows.stop + LABEL_PX + 2 * scale, cols]  # the label band under the tile
        assert (np.abs(band - white).sum(axis=-1) > 0.5).sum() > 20, titles[i]  # text drawn there
        x, y = label_anchor(i, (16, 16), scale)
        assert cols.start < x < cols.stop and y > rows.stop
    one, base = pixels[tile_box(0, (16, 16), scale)], pixels[tile_box(titles.index("baseline"), (16, 16), scale)]
    assert np.array_equal(one, base)  # the tiles' own pixels untouched by any label
    empty = len(titles)  # the grid's first unused place holds no label
    rows, cols = tile_box(empty, (16, 16), scale)
    assert (np.abs(pixels[rows.stop: rows.stop + LABEL_PX, cols] - white).sum() == 0)


def test_section_absent_for_a_study_without_a_mixing_axis(tmp_path):
    plain = {**STUDY, "name": "plain", "zip": {}, "seeds": {"replicates": 1},
             "grid": {"optimizer.lr": [0.05, 0.1]}}
    spec = tmp_path / "plain.yaml"
    spec.write_text(yaml.safe_dump(plain))
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--threads", "1", "--report"]) == 0
    report = tmp_path / "out" / "report"
    assert "Mixed-example augmentation" not in (report / "index.html").read_text()
    assert not (report / "tables" / "mixing.csv").exists()
    assert not (report / "figures" / "mixing_examples.png").exists()


def test_tiles_take_the_eval_steps_and_the_rescaling_methods_own_range():
    """Before the mix only ``normalize`` (at_eval) applies, never the random crop; BC+ declares its own range."""
    from ablab.registry import AUGMENTATIONS, DATASETS
    from ablab.report.mixing_figure import tiles, two_images

    dataset = DATASETS.create({"name": "digits", "size": 16})
    steps = [{"name": "random_crop", "padding": 2}, "normalize"]
    arms = [("mixup", [*steps, "mixup"]), ("bc+", [*steps, "bc_plus"]), ("vh-bc+", [*steps, "vh_bc_plus"])]
    titles, images, own = tiles(arms, dataset)
    assert titles == ["image 1", "image 2", "mixup", "bc+", "vh-bc+"]
    assert own == [False, False, False, True, True]
    norm = AUGMENTATIONS.create("normalize", dataset=dataset)
    x1, _ = two_images(dataset)
    assert torch.equal(images[0], norm(x1[None], torch.zeros(1), None)[0][0])


def test_the_error_column_has_one_precision(study):
    """Issue 21: every cell of the error % column shows the same number of decimals (report/numbers.py)."""
    page = (study / "report" / "index.html").read_text()
    table = page.split("<h2>Mixed-example augmentation</h2>", 1)[1].split("</table>", 1)[0]
    cells = [row.split("<td class=\"num\">")[2].split("</td>")[0] for row in table.split("<tr>")[2:]]
    assert len(cells) == len(ARMS) and all(" ± " in c for c in cells)
    decimals = {len(part.split(".")[1]) if "." in part else 0 for c in cells for part in c.split(" ± ")
                if not part.startswith("<")}
    assert len(decimals) == 1, cells
