"""Study syntax for the sources of nondeterminism: ``seeds: {vary: [source], replicates: R}``, per-variant
seed axes, stable run ids, and bad input (one message, exit 2, nothing written)."""

from __future__ import annotations

import json

import pytest
from torch import nn

from ablab.cli import main
from ablab.registry import MODELS, Entry
from ablab.spec import RunSpec, Study, expand
from conftest import TINY_BASE, tiny_study, run_refused


def runs(**study) -> list:
    return expand(Study.model_validate(tiny_study(**study)))


def seeds_of(variants) -> list[dict]:
    return [v.spec.seeds.model_dump() for v in variants]


def test_vary_bitflip_holds_every_other_source_and_flips_nothing_by_default():
    flips = runs(seeds={"vary": ["bitflip"], "replicates": 4})
    assert seeds_of(flips) == [{"init": 0, "shuffle": 0, "augment": 0, "stochastic": 0, "bitflip": r} for r in range(4)]
    assert all(v.spec.deterministic for v in flips)
    plain = runs(seeds={"replicates": 3})  # the default varies init, shuffle, augment, stochastic: no bit change
    assert [s["bitflip"] for s in seeds_of(plain)] == [None] * 3
    assert [s["init"] for s in seeds_of(plain)] == [0, 1, 2]


def test_vary_kernels_gives_nondeterministic_replicates_with_identical_seeds():
    variants = runs(seeds={"vary": ["kernels"], "replicates": 3})
    assert [v.spec.deterministic for v in variants] == [False] * 3
    assert len({json.dumps(s, sort_keys=True) for s in seeds_of(variants)}) == 1
    assert len({v.id for v in variants}) == 3  # replicates are distinct runs
    held = runs(seeds={"vary": ["init"], "replicates": 2})
    assert [v.spec.deterministic for v in held] == [True, True]


def test_a_run_without_a_bit_change_keeps_its_id():
    spec = RunSpec.model_validate(TINY_BASE)
    data = json.loads(spec.canonical_json())
    assert data["seeds"]["bitflip"] is None
    del data["seeds"]["bitflip"]  # what a run stored before the bitflip source looked like
    assert RunSpec.model_validate(data).id == spec.id
    assert RunSpec.model_validate({**TINY_BASE, "seeds": {"bitflip": 0}}).id != spec.id


def test_per_source_rows_in_one_study_with_per_variant_seed_axes():
    variants = runs(
        base={**TINY_BASE, "seeds": {"init": 100, "shuffle": 100, "augment": 100, "stochastic": 100}},
        seeds={"replicates": 3},
        zip={"label": ["trunk", "init", "bitflip", "kernels"], "seeds.vary": [[], ["init"], ["bitflip"], ["kernels"]],
             "seeds.replicates": [1, 3, 3, 3]})
    by_label: dict[str, list] = {}
    for v in variants:
        by_label.setdefault(v.label, []).append(v.spec)
    assert {k: len(v) for k, v in by_label.items()} == {"trunk": 1, "init": 3, "bitflip": 3, "kernels": 3}
    assert [s.seeds.init for s in by_label["init"]] == [0, 1, 2]
    assert [s.seeds.bitflip for s in by_label["bitflip"]] == [0, 1, 2]
    assert {s.seeds.init for s in by_label["bitflip"] + by_label["kernels"] + by_label["trunk"]} == {100}
    assert [s.deterministic for s in by_label["kernels"]] == [False] * 3


def _bad(write_study, tmp_path, capsys, study: dict, *extra) -> str:
    return run_refused(write_study, study, tmp_path, capsys, *extra)[0]


@pytest.fixture
def no_weights_model(monkeypatch):
    """A registered model whose only parameters are a norm layer's (no conv or linear weight)."""
    def factory(in_shape: tuple[int, ...], out_dim: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.AdaptiveAvgPool1d(out_dim), nn.BatchNorm1d(out_dim))

    monkeypatch.setitem(MODELS._entries, "no_weights", Entry("no_weights", factory, "test model"))
    return "no_weights"


def test_bitflip_on_a_model_without_a_weight_layer_is_one_spec_error(write_study, tmp_path, capsys,
                                                                    no_weights_model):
    study = tiny_study(base={**TINY_BASE, "model": no_weights_model}, seeds={"vary": ["bitflip"], "replicates": 2})
    err = _bad(write_study, tmp_path, capsys, study)
    assert "base.seeds.bitflip" in err and "no weight layer" in err
    ok = tiny_study(base={**TINY_BASE, "model": no_weights_model, "epochs": 1})  # the same model without a flip runs
    assert main(["validate", str(write_study(ok, "ok.yaml"))]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("study, field, words", [
    (tiny_study(base={**TINY_BASE, "seeds": {"kernels": 1}}), "base.seeds", "'kernels' has no seed"),
    (tiny_study(seeds={"vary": ["kernel"]}), "seeds.vary", "kernels"),
    (tiny_study(zip={"seeds.vary": [["init"], ["bits"]]}), "seeds.vary", "bitflip"),
    (tiny_study(zip={"seeds.replicates": [1, 0]}), "seeds.replicates", "greater than 0"),
])
def test_bad_source_syntax_is_one_clear_error(write_study, tmp_path, capsys, study, field, words):
    err = _bad(write_study, tmp_path, capsys, study)
    assert field in err and words in err, err
