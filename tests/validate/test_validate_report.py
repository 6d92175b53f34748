"""Everything a study's report and overrides name is checked before the first run (issue 12):
one error naming the field, exit 2, nothing written."""

import pytest

from ablab.cli import main
from ablab.report.baselines import pairs_of
from conftest import tiny_study, run_refused

NORM_BY_LR = {"model.norm": ["none", "batchnorm"], "optimizer.lr": [0.1, 0.05]}


def _refused(write_study, study, tmp_path, capsys, *extra) -> str:
    err, path = run_refused(write_study, study, tmp_path, capsys, *extra)
    assert err.startswith(f"error: {path}: ") or err.startswith("error: --set: "), err
    return err


def _report(**report) -> dict:
    return tiny_study(grid=NORM_BY_LR, report=report)


def _split_base(splits: list[str]) -> dict:
    study = tiny_study(report={"metrics": ["test.accuracy"]})
    study["base"]["record"]["eval_splits"] = splits
    return study


BAD = [
    ("metric typo", _report(metrics=["test.acc"]), "report.metrics.0", "Did you mean 'test.accuracy'"),
    ("split not evaluated", _split_base(["train", "val"]), "report.metrics.0", "add it to record.eval_splits"),
    ("curve typo", _report(curves=["train.loss", "val.acuracy"]), "report.curves.1", "no run records 'val.acuracy'"),
    ("mse on classification", _report(metrics=["test.mse"]), "report.metrics.0", "no run records 'test.mse'"),
    ("select_on unknown", _report(selection="best", select_on="val.err"), "report.select_on", "'val.err'"),
    ("grid metric unknown", _report(grids=[{"rows": "model.norm", "cols": "optimizer.lr", "metric": "test.los"}]),
     "report.grids.0.metric", "Did you mean 'test.loss'"),
    ("best metric unknown", _report(best={"metric": "val.sam_sharpness"}), "report.best.metric",
     "'val.sam_sharpness'"),
    ("baseline label", _report(baselines={"lower": "vanilla"}), "report.baselines.lower", "names no variant"),
    ("baseline axis value", _report(baselines={"upper": {"model.norm": "layernorm"}}), "report.baselines.upper",
     "matches no variant"),
    ("baseline ambiguous", tiny_study(grid={"optimizer": [{"name": "sgd", "lr": 0.1}, {"name": "sgd", "lr": 0.05},
                                                          {"name": "adam", "lr": 0.01}]},
                                      report={"baselines": {"lower": {"optimizer.name": "sgd"}}}),
     "report.baselines.lower", "gives 'optimizer=adam(lr=0.01)' 2 baselines with its other settings "
     "('optimizer=sgd(lr=0.1)', 'optimizer=sgd(lr=0.05)')"),
    ("baseline not an axis", _report(baselines={"lower": {"model.width": 64}}), "report.baselines.lower",
     "'model.width' is not an axis"),
    ("best.baseline not an axis", _report(best={"metric": "test.loss", "baseline": {"objective": "standard"}}),
     "report.best.baseline.objective", "not an axis"),
    ("best.baseline no match", _report(best={"metric": "test.loss", "baseline": {"model.norm": "group"}}),
     "report.best.baseline", "matches no variant"),
    ("seed shadowed by vary", tiny_study(base={**tiny_study()["base"], "seeds": {"init": 4}}), "base.seeds.init",
     "seeds.vary"),
]


@pytest.mark.parametrize("case, study, field, text", BAD, ids=[c[0] for c in BAD])
def test_report_errors_before_the_first_run(case, study, field, text, write_study, tmp_path, capsys):
    err = _refused(write_study, study, tmp_path, capsys)
    assert f": {field}: " in err, err
    assert text in err, err


GOOD = [
    ("recorded names", _report(metrics=["test.accuracy", "val.loss", "batch.lr"], curves=["batch.loss"])),
    ("baseline label", _report(baselines={"lower": "model.norm=none, optimizer.lr=0.1"})),
    ("baseline family", _report(baselines={"lower": "model.norm=none"})),
    ("baseline axis values, family", _report(baselines={"lower": {"model.norm": "none"}})),
    ("baseline axis values, one", _report(baselines={"upper": {"model.norm": "batchnorm", "optimizer.lr": 0.05}})),
    ("baseline on the second axis", _report(baselines={"lower": {"optimizer.lr": 0.1}})),
    ("best.baseline by label", _report(best={"metric": "test.loss", "baseline": "model.norm=none, optimizer.lr=0.1"})),
    ("best.baseline under an axis", tiny_study(grid={"optimizer": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}]},
                                               report={"best": {"metric": "test.loss", "baseline": {"optimizer.name": "sgd"}}})),
    ("explicit seed not varied", tiny_study(base={**tiny_study()["base"], "seeds": {"init": 4}},
                                            seeds={"replicates": 2, "vary": ["shuffle"]})),
]


@pytest.mark.parametrize("case, study", GOOD, ids=[c[0] for c in GOOD])
def test_valid_report_settings_pass(case, study, write_study, capsys):
    code = main(["validate", str(write_study(study))])
    assert code == 0, capsys.readouterr().err


def test_default_report_settings_need_not_be_recorded(write_study, capsys):
    """The defaults name test.accuracy; a regression study does not record it and is still valid."""
    study = tiny_study()
    study["base"].update(data="diabetes", loss="mse")
    assert main(["validate", str(write_study(study))]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("override, grid", [
    ("optimizer.lr=0.01", {"optimizer": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}]}),  # parent axis
    ("optimizer.lr=0.01", {"optimizer.lr": [0.1, 0.05]}),  # the same path
    ("optimizer={name: adam, lr: 0.01}", {"optimizer.lr": [0.1, 0.05]}),  # a child axis
    ("base.optimizer.lr=0.01", {"optimizer": ["sgd", "adam"]}),  # spelled from the study
])
def test_an_override_a_grid_axis_shadows_is_an_error(override, grid, write_study, tmp_path, capsys):
    err = _refused(write_study, tiny_study(grid=grid), tmp_path, capsys, "--set", override)
    assert "grid axis" in err and "would be ignored" in err, err


def test_an_override_a_zip_axis_shadows_is_an_error(write_study, tmp_path, capsys):
    study = tiny_study(zip={"label": ["a", "b"], "optimizer.lr": [0.1, 0.05]})
    err = _refused(write_study, study, tmp_path, capsys, "--set", "optimizer.lr=0.3")
    assert "zip axis 'optimizer.lr'" in err, err


def test_an_override_beside_the_axes_applies(write_study, capsys):
    path = write_study(tiny_study(grid={"optimizer.lr": [0.1, 0.05]}))
    assert main(["validate", str(path), "--set", "optimizer.momentum=0.5", "--set", "epochs=1"]) == 0


ROWS = [(f"model.norm={n}, optimizer.lr={lr}", {"model.norm": n, "optimizer.lr": lr}, {}, r)
        for n in ("none", "batchnorm") for lr in (0.1, 0.05) for r in (0, 1)]


def test_baselines_pair_each_variant_with_its_other_settings():
    """Axis values on either axis give each variant the matching variant with its own other axis values."""
    def label(norm, lr):
        return f"model.norm={norm}, optimizer.lr={lr}"

    by_lr = pairs_of({"optimizer.lr": 0.1}, ROWS)  # the second axis: what a family of labels could not name
    assert by_lr == {label(n, lr): label(n, 0.1) for n in ("none", "batchnorm") for lr in (0.1, 0.05)}
    by_norm = pairs_of({"model.norm": "none"}, ROWS)
    assert by_norm == {label(n, lr): label("none", lr) for n in ("none", "batchnorm") for lr in (0.1, 0.05)}
    one = pairs_of({"model.norm": "none", "optimizer.lr": 0.05}, ROWS)
    assert set(one.values()) == {label("none", 0.05)}
    assert set(pairs_of({"label": label("batchnorm", 0.1)}, ROWS).values()) == {label("batchnorm", 0.1)}
    # labels and families as written: unchanged
    assert pairs_of("model.norm=batchnorm", ROWS)[label("none", 0.05)] == label("batchnorm", 0.05)
    with pytest.raises(ValueError, match="names no variant"):
        pairs_of("batchnorm", ROWS)
    with pytest.raises(ValueError, match="matches no variant"):
        pairs_of({"optimizer.lr": 0.3}, ROWS)


def test_a_variant_without_a_partner_has_no_baseline_and_zip_axes_move_together():
    rows = [r for r in ROWS if r[0] != "model.norm=none, optimizer.lr=0.05"]  # an incomplete grid
    pairs = pairs_of({"model.norm": "none"}, rows)
    assert pairs["model.norm=batchnorm, optimizer.lr=0.05"] is None
    assert pairs["model.norm=batchnorm, optimizer.lr=0.1"] == "model.norm=none, optimizer.lr=0.1"
    zipped = [(f"{name}, lr={lr}", {"label": name, "model.norm": norm, "lr": lr}, {}, 0)
              for name, norm in (("plain", "none"), ("bn", "batchnorm")) for lr in (0.1, 0.05)]
    # naming model.norm names its zip group (the label too): each variant gets the 'plain' of its lr
    pairs = pairs_of({"model.norm": "none"}, zipped, [frozenset({"label", "model.norm"})])
    assert pairs == {"plain, lr=0.1": "plain, lr=0.1", "plain, lr=0.05": "plain, lr=0.05",
                     "bn, lr=0.1": "plain, lr=0.1", "bn, lr=0.05": "plain, lr=0.05"}
