"""TrainState: a checkpoint is ``state_dict()``, a restore ``load_state_dict()``; a continued run is bitwise
the run that never stopped, from checkpoints written today and by the format-1 ``capture`` of before."""

import copy
import hashlib
import io

import torch

from ablab.artifacts import checkpoint_name, load_checkpoint
from ablab.spec import RunSpec
from ablab.train import checkpoint as ckpt
from ablab.train.build import build_model, build_optimizer, build_run, load_run_data, optimizer_key
from ablab.train.inputs import StoredFile, UnitFiles
from ablab.train.loop import train
from ablab.train.state import TrainState
from conftest import TINY_BASE

# dropout (stochastic stream), hflip (augment stream), shuffling and momentum: every stream has a state
BASE = {**copy.deepcopy(TINY_BASE), "model": {"name": "mlp", "widths": [16], "dropout": 0.2},
        "augment": [{"name": "hflip"}], "epochs": 4, "batch_size": 100,
        "record": {"every_steps": 3, "eval_splits": ["test"], "checkpoints": {"epochs": [2], "final": True}}}


def _spec(**changes) -> RunSpec:
    return RunSpec.model_validate({**copy.deepcopy(BASE), **changes})


def _handed(run: str, epoch: int, data: bytes) -> UnitFiles:
    return UnitFiles({(run, epoch): StoredFile(hashlib.sha256(data).hexdigest(), data=data)})


def _same(a, b) -> bool:
    """Equal nested checkpoint contents: tensors bitwise, everything else by ==."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _continued(full, spec: RunSpec, data: bytes):
    """The run continued from ``data`` (its epoch-2 checkpoint) and the full run's rows from that point."""
    cont_spec = _spec(init_from={"run": spec.id, "epoch": 2})
    cont = train(cont_spec, files=_handed(spec.id, 2, data))
    assert cont.status == "done", cont.error
    step2 = load_checkpoint(data)["step"]
    return cont, [row for row in full.metrics if row[0] >= step2]


def test_state_dict_then_load_state_dict_gives_the_same_state():
    spec = _spec()
    full = train(spec)
    saved = load_checkpoint(full.artifacts[checkpoint_name(2)])
    run = build_run(spec)
    state = TrainState.create(run.model, run.optimizer, run.device, spec.seeds.model_dump(), optimizer_key(spec))
    restored = state.load_state_dict(saved)
    assert restored.streams == ["augment", "shuffle", "stochastic"] and restored.optimizer
    with state.stochastic_stream():
        again = state.state_dict()
    assert _same(saved, again)
    assert saved["step"] == 2 * 13 and saved["epoch"] == 2  # digits: 1257 training examples, batches of 100


def test_a_continued_run_is_bitwise_the_uninterrupted_one():
    spec = _spec()
    full = train(spec)
    cont, expected = _continued(full, spec, full.artifacts[checkpoint_name(2)])
    assert cont.metrics == expected and len(expected) > 10
    final = checkpoint_name(4)
    assert _same(load_checkpoint(full.artifacts[final])["model"], load_checkpoint(cont.artifacts[final])["model"])
    assert checkpoint_name(2) not in cont.artifacts  # the source's checkpoint is not saved again
    assert cont.info["continued_from"] == {"run": spec.id, "epoch": 2, "restored_streams": [
        "augment", "shuffle", "stochastic"]}


def _old_capture(*, model, optimizer, step, epoch, seeds, shuffle, augment, device, running, optimizer_spec=""):
    """The checkpoint writer of format 1 as it was before TrainState (train/checkpoint.py ``capture``)."""
    state = {
        "format": 1,
        "step": step,
        "epoch": epoch,
        "seeds": dict(seeds),
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "optimizer_spec": optimizer_spec,
        "rng": {"shuffle": shuffle.get_state(), "augment": augment.get_state().cpu(),
                "stochastic": ckpt.stochastic_state(device)},
        "running": {"loss": running[0].detach().cpu(), "batches": running[1]},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def test_a_checkpoint_written_by_the_old_capture_continues_bitwise():
    spec = _spec()
    full = train(spec)
    at2 = load_checkpoint(full.artifacts[checkpoint_name(2)])
    # the training state at epoch 2 in the objects the old loop held, written by the old code
    data = load_run_data(spec)
    model = build_model(spec, data)
    model.load_state_dict(at2["model"])
    optimizer = build_optimizer(spec, model).optimizer
    optimizer.load_state_dict(at2["optimizer"])
    shuffle, augment = torch.Generator(), torch.Generator()
    shuffle.set_state(at2["rng"]["shuffle"])
    augment.set_state(at2["rng"]["augment"])
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(at2["rng"]["stochastic"]["cpu"])
        old = _old_capture(model=model, optimizer=optimizer, step=at2["step"], epoch=2, seeds=spec.seeds.model_dump(),
                           shuffle=shuffle, augment=augment, device=torch.device("cpu"),
                           running=(at2["running"]["loss"], at2["running"]["batches"]),
                           optimizer_spec=optimizer_key(spec))
    cont, expected = _continued(full, spec, old)
    assert cont.metrics == expected and len(expected) > 10
    assert cont.info["continued_from"]["restored_streams"] == ["augment", "shuffle", "stochastic"]


def test_a_continued_run_without_its_checkpoint_fails_with_the_reason():
    result = train(_spec(init_from={"run": "0123456789abcdef", "epoch": 2}))
    assert result.status == "failed"
    assert "the checkpoint of run 0123456789abcdef at epoch 2 was not handed to this unit" in result.error


def test_a_damaged_checkpoint_is_refused():
    spec = _spec()
    data = train(spec).artifacts[checkpoint_name(2)]
    files = UnitFiles({(spec.id, 2): StoredFile(hashlib.sha256(data).hexdigest(), data=data[:-1] + b"x")})
    result = train(_spec(init_from={"run": spec.id, "epoch": 2}), files=files)
    assert result.status == "failed" and "does not match its recorded sha256" in result.error
