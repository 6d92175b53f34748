"""Snapshot ensembles' cyclic schedule: per-cycle warm-up, cosine to zero at each cycle end, M snapshots."""

import math

import pytest
import yaml

from ablab.cli import main
from ablab.errors import SpecError
from ablab.registry import SCHEDULES

from conftest import TINY_BASE, stored


def _factors(cycles, warmup_epochs, epochs, spe):
    f = SCHEDULES.create({"name": "snapshot_cosine", "cycles": cycles, "warmup_epochs": warmup_epochs},
                         total_steps=epochs * spe, steps_per_epoch=spe)
    return [f(s) for s in range(epochs * spe)]


@pytest.mark.parametrize("cycles, warmup, epochs, spe", [(5, 3, 500, 98), (5, 1, 10, 3), (3, 0, 6, 7), (1, 2, 4, 5)])
def test_lr_is_zero_at_each_cycle_end_and_warms_up_at_each_cycle_start(cycles, warmup, epochs, spe):
    lr = 0.4
    lrs = [lr * f for f in _factors(cycles, warmup, epochs, spe)]
    cycle = epochs * spe // cycles
    w = warmup * spe
    for c in range(cycles):
        start = c * cycle
        assert lrs[start + cycle - 1] <= 1e-7  # the snapshot's step
        # linear warm-up from lr/W up to lr over the cycle's first W steps, then the cosine from its phase
        for t in range(w):
            assert lrs[start + t] == pytest.approx(lr * (t + 1) / w, abs=1e-12)
        for t in range(w, cycle):
            assert lrs[start + t] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (t + 1) / cycle)), abs=1e-12)
    # every cycle is the same curve (the schedule restarts)
    assert lrs[:cycle] * cycles == lrs
    if w:
        assert max(lrs[:cycle]) == pytest.approx(lr)


def test_a_warm_up_longer_than_a_cycle_or_uneven_cycles_are_spec_errors():
    with pytest.raises(SpecError, match="fills the whole cycle"):
        _factors(5, 2, 10, 3)
    with pytest.raises(SpecError, match="equal cycles"):
        SCHEDULES.create({"name": "snapshot_cosine", "cycles": 4}, total_steps=30, steps_per_epoch=3)


def _snapshot_study(epochs, cycles, snapshots=True):
    base = {**TINY_BASE, "epochs": epochs, "schedule": {"name": "snapshot_cosine", "cycles": cycles},
            "record": {"every_steps": 1, "eval_splits": ["test"], "checkpoints": {"snapshots": snapshots}}}
    return {"name": "snap", "base": base}


def test_a_run_saves_exactly_one_snapshot_per_cycle_where_the_lr_is_zero(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_snapshot_study(6, 3)))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    from ablab.store import Store

    store = Store.open(tmp_path / "out")
    try:
        run = store.runs().run.iloc[0]
        assert store.checkpoint_epochs(run) == [2, 4, 6]
        steps = [store.load_checkpoint(run, e)["step"] for e in (2, 4, 6)]
    finally:
        store.close()
    metrics, _ = stored(tmp_path / "out")
    lr = metrics[metrics.name == "lr"].set_index("step").value  # at step s: the lr of the s-th step
    spe = steps[0] // 2
    assert steps == [2 * spe, 4 * spe, 6 * spe]
    for s in steps:
        assert lr.loc[s] <= 1e-7  # the step that ends the cycle
        if s < steps[-1]:
            assert lr.loc[s + 1] > 0.09  # the next cycle restarts near the base lr (0.1)


@pytest.mark.parametrize("change, message", [
    ({"epochs": 7}, "do not split into 3 equal cycles"),
    ({"steps": 30, "epochs": None}, "give 'epochs'"),
])
def test_epochs_not_divisible_by_the_cycles_is_one_spec_error_exit_2(tmp_path, capsys, change, message):
    study = _snapshot_study(6, 3)
    for key, value in change.items():
        if value is None:
            study["base"].pop(key)
        else:
            study["base"][key] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_snapshots_without_a_cyclic_schedule_is_one_spec_error(tmp_path, capsys):
    study = _snapshot_study(6, 3)
    study["base"]["schedule"] = "constant"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["validate", str(path)]) == 2
    assert "has none (use snapshot_cosine)" in capsys.readouterr().err
