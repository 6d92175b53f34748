import json

import pytest

from ablab.errors import SpecError
from ablab.spec import RunSpec, expand, load_study, make_label
from conftest import TINY_BASE, tiny_study


def _expand(write_study, study):
    path = write_study(study)
    return expand(load_study(path), str(path))


def test_grid_zip_and_seeds_multiply(write_study):
    study = tiny_study(
        grid={"optimizer.lr": [0.1, 0.01], "model.widths": [[8], [16]]},
        zip={"epochs": [1, 2, 3], "batch_size": [32, 64, 128]},
        seeds={"replicates": 2},
    )
    runs = _expand(write_study, study)
    assert len(runs) == 2 * 2 * 3 * 2
    assert len({r.id for r in runs}) == len(runs)
    zipped = {(r.spec.epochs, r.spec.batch_size) for r in runs}
    assert zipped == {(1, 32), (2, 64), (3, 128)}  # zip varies together, never crossed


def test_zip_axes_must_have_equal_lengths(write_study):
    with pytest.raises(SpecError, match="equal lengths") as err:
        load_study(write_study(tiny_study(zip={"epochs": [1, 2], "batch_size": [32]})))
    assert err.value.field == "zip"


def test_run_id_is_stable_and_depends_on_every_setting(write_study):
    a = _expand(write_study, tiny_study())
    b = _expand(write_study, tiny_study())
    assert [r.id for r in a] == [r.id for r in b]
    assert all(len(r.id) == 16 for r in a)
    changed = tiny_study()
    changed["base"]["optimizer"]["lr"] = 0.2
    assert {r.id for r in _expand(write_study, changed)}.isdisjoint({r.id for r in a})


def test_run_id_ignores_spelling_of_defaults(write_study):
    explicit = tiny_study()
    explicit["base"]["optimizer"]["nesterov"] = False
    explicit["base"]["schedule"] = {"name": "constant"}
    assert [r.id for r in _expand(write_study, explicit)] == [r.id for r in _expand(write_study, tiny_study())]


def test_run_id_depends_on_protocol_version(monkeypatch, write_study):
    import ablab.spec

    before = _expand(write_study, tiny_study())[0].spec.id
    monkeypatch.setattr(ablab.spec.models, "PROTOCOL_VERSION", 999)
    assert _expand(write_study, tiny_study())[0].spec.id != before


def test_canonical_json_round_trips():
    spec = RunSpec.model_validate(TINY_BASE)
    again = RunSpec.model_validate_json(spec.canonical_json())
    assert again.id == spec.id and json.loads(again.canonical_json()) == json.loads(spec.canonical_json())


def test_seed_streams_vary_only_where_asked(write_study):
    runs = _expand(write_study, tiny_study(seeds={"replicates": 3, "vary": ["shuffle"], "base": 10}))
    assert [r.spec.seeds.shuffle for r in runs] == [10, 11, 12]
    assert {r.spec.seeds.init for r in runs} == {10}
    assert [r.replicate for r in runs] == [0, 1, 2]


def test_replicates_with_nothing_varying_are_still_distinct_runs(write_study):
    runs = _expand(write_study, tiny_study(seeds={"replicates": 3, "vary": []}))
    assert len({r.id for r in runs}) == 3


def test_dotted_override_turns_a_component_name_into_a_dict(write_study):
    study = tiny_study(grid={"model.dropout": [0.0, 0.5]})
    study["base"]["model"] = "mlp"
    runs = _expand(write_study, study)
    assert {r.spec.model["dropout"] for r in runs} == {0.0, 0.5}
    assert all(r.spec.model["name"] == "mlp" for r in runs)


def test_command_line_overrides(write_study):
    path = write_study(tiny_study())
    study = load_study(path, ["optimizer.lr=0.5", "epochs=4"])
    assert study.base["optimizer"]["lr"] == 0.5 and study.base["epochs"] == 4


def test_labels_are_readable():
    assert make_label({"optimizer": {"name": "adam", "lr": 0.001}, "model.norm": "none"}) == "optimizer=adam(lr=0.001), model.norm=none"
    assert make_label({"optimizer.name": "sgd"}) == "optimizer=sgd"
    assert make_label({}) == "base"
    assert make_label({"label": "vanilla", "model.norm": "none"}, frozenset({"label", "model.norm"})) == "vanilla"
    assert make_label({"label": "bn", "model.norm": "batchnorm", "lr_scale": 10}, frozenset({"label", "model.norm"})) == "bn, lr_scale=10"


def test_zip_label_key_names_variants(write_study):
    runs = _expand(write_study, tiny_study(zip={"label": ["narrow", "wide"], "model.widths": [[4], [32]]}))
    assert {r.label for r in runs} == {"narrow", "wide"}
    crossed = _expand(write_study, tiny_study(zip={"label": ["narrow", "wide"], "model.widths": [[4], [32]]},
                                              grid={"optimizer.lr": [0.1, 0.2]}, seeds={"replicates": 1}))
    assert [r.label for r in crossed] == ["narrow, optimizer.lr=0.1", "wide, optimizer.lr=0.1",
                                          "narrow, optimizer.lr=0.2", "wide, optimizer.lr=0.2"]


def test_same_experiment_twice_is_an_error(write_study):
    with pytest.raises(SpecError, match="same experiment"):
        _expand(write_study, tiny_study(grid={"optimizer.lr": [0.1, 0.1]}))


def test_a_stored_source_is_read_through_the_opener_the_caller_hands_in(tmp_path):
    """The spec layer never opens a store: ``expand`` reads a stored study through ``open_stored``."""
    import ablab
    from ablab.spec import Study

    study = Study.model_validate({"name": "p", "source": {"study": str(tmp_path / "nowhere")}})
    with pytest.raises(TypeError, match="open_stored"):
        expand(study)
    opened = []
    with pytest.raises(SpecError, match="source study: ") as err:
        expand(study, open_stored=lambda path: opened.append(path) or ablab.load(path))
    assert opened == [str(tmp_path / "nowhere")] and err.value.field == "source.study"


def test_a_run_id_worked_out_once_follows_every_change():
    """The id is kept once asked for; a changed copy and a field set in place each get the new one."""
    spec = RunSpec.model_validate(TINY_BASE)
    first = spec.id
    changed = {**TINY_BASE, "epochs": 3}
    assert spec.model_copy(update={"epochs": 3}).id == RunSpec.model_validate(changed).id != first
    spec.epochs = 3
    assert spec.id == RunSpec.model_validate(changed).id
