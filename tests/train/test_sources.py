"""The sources of nondeterminism of seed 002 ch. 5: bitwise reproducibility, independent streams, the
one-ulp bit change (``seeds.bitflip``) and the kernels switch (``deterministic``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from ablab import seeding
from ablab.data import sampler
from ablab.spec import RunSpec
from ablab.train import loop
from ablab.train.build import build_model, load_dataset
from ablab.train.loop import train
from conftest import TINY_BASE

# dropout (stochastic), a random crop (augment), shuffled batches (shuffle), the init: every stream draws
NOISY = {**TINY_BASE, "model": {"name": "mlp", "widths": [16], "dropout": 0.3}, "epochs": 2,
         "augment": [{"name": "random_crop", "padding": 1}],
         "record": {"every_steps": 5, "eval_splits": ["test"], "checkpoints": {"epochs": [0], "final": True},
                    "evaluators": ["standard", {"name": "predictions", "splits": ["test"], "epochs": "last"}]}}


def spec(seeds: dict | None = None, **changes) -> RunSpec:
    return RunSpec.model_validate({**NOISY, **changes, "seeds": seeds or {}})


def artifact(result, name: str) -> bytes:
    return result.artifacts[name]


def weights(result, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(artifact(result, f"checkpoint_e{epoch:04d}.pt")), weights_only=True)["model"]


def flat_first_weight(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return state["fc0.weight"].flatten()


def as_bits(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32).view(np.int32).astype(np.int64)


# ---------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("bitflip", [None, 3])
def test_identical_seeds_give_bitwise_identical_weights_logits_and_metrics(bitflip):
    s = spec({"init": 2, "shuffle": 5, "augment": 7, "stochastic": 9, "bitflip": bitflip})
    a, b = train(s), train(s)
    assert a.status == b.status == "done"
    assert a.metrics == b.metrics  # exact float equality, every row
    assert artifact(a, "predictions_test_e0002.npy") == artifact(b, "predictions_test_e0002.npy")
    wa, wb = weights(a, 2), weights(b, 2)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a.info.get("bitflip") is None) == (bitflip is None) and a.info.get("bitflip") == b.info.get("bitflip")


# ---------------------------------------------------------------- independent streams


_REAL = (sampler.iterate_batches, loop.build_run)  # the iid sampler's epochs


def _recorded_draws(s: RunSpec, monkeypatch) -> dict:
    """Every stream's draws during a run: initial weights (before any bit change), the batch order, the
    augmentation generator's state at each call and the in-model (dropout) generator's state at each step."""
    seen = {"order": [], "augment": [], "stochastic": []}
    real_batches, real_build = _REAL

    def batches(*args, **kwargs):
        for idx in real_batches(*args, **kwargs):
            seen["order"].append(idx.clone())
            yield idx

    def recorder(x, y, gen):
        seen["augment"].append(gen.get_state().clone())
        seen["stochastic"].append(torch.get_rng_state().clone())
        return x, y

    def build(*args, **kwargs):
        parts = real_build(*args, **kwargs)
        parts.augments.append(recorder)
        return parts

    monkeypatch.setattr(sampler, "iterate_batches", batches)
    monkeypatch.setattr(loop, "build_run", build)
    result = train(s)
    assert result.status == "done", result.error
    seen["init"] = torch.cat([p.flatten() for p in build_model(s, load_dataset(s.data)).parameters()])
    seen["result"] = result
    return seen


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("changed", seeding.STREAMS)
def test_changing_one_stream_leaves_every_other_streams_draws_unchanged(changed, monkeypatch):
    base = {"init": 1, "shuffle": 1, "augment": 1, "stochastic": 1, "bitflip": 1}
    a = _recorded_draws(spec(base), monkeypatch)
    b = _recorded_draws(spec({**base, changed: 2}), monkeypatch)
    assert torch.equal(a["init"], b["init"]) == (changed != "init")
    assert _same(a["order"], b["order"]) == (changed != "shuffle")
    assert _same(a["augment"], b["augment"]) == (changed != "augment")
    assert _same(a["stochastic"], b["stochastic"]) == (changed != "stochastic")
    flip_a, flip_b = a["result"].info["bitflip"], b["result"].info["bitflip"]
    assert (flip_a["index"], flip_a["direction"]) == (flip_b["index"], flip_b["direction"]) or changed == "bitflip"
    final_a, final_b = weights(a["result"], 2), weights(b["result"], 2)
    assert any(not torch.equal(final_a[k], final_b[k]) for k in final_a)  # and each stream does change the run


# ---------------------------------------------------------------- the bit change


def test_bit_change_moves_exactly_one_weight_by_one_ulp_chosen_by_its_seed_alone():
    data = load_dataset({"name": "digits"})
    chosen = set()
    for bit_seed in range(12):
        picks = []
        for init in (0, 1):
            model = build_model(spec({"init": init}), data)
            before = flat_first_weight(model.state_dict()).clone()
            record = seeding.flip_one_weight_(model, bit_seed)
            after = flat_first_weight(model.state_dict())
            changed = torch.nonzero(before != after).flatten().tolist()
            assert changed == [record["index"]]  # exactly one element, the recorded one
            i = changed[0]
            # one ulp: adjacent float32 bit patterns (same sign), independent of torch.nextafter
            step = int(as_bits(after[i:i + 1])[0] - as_bits(before[i:i + 1])[0])
            sign = 1 if before[i] > 0 else -1
            assert step * sign == (1 if record["direction"] == "up" else -1)
            assert after[i] == np.nextafter(np.float32(before[i]), np.float32(np.inf if step * sign > 0 else -np.inf))
            assert record["parameter"] == "fc0.weight" and record["before"] == before[i].item()
            picks.append((i, record["direction"]))
        assert picks[0] == picks[1]  # same bitflip seed, different init seeds: same index and direction
        chosen.add(picks[0])
    assert len({i for i, _ in chosen}) >= 10 and {d for _, d in chosen} == {"up", "down"}


def test_bit_change_is_in_the_run_from_its_first_step():
    plain, flipped = train(spec()), train(spec({"bitflip": 4}))
    w0, w1 = flat_first_weight(weights(plain, 0)), flat_first_weight(weights(flipped, 0))
    assert torch.nonzero(w0 != w1).flatten().tolist() == [flipped.info["bitflip"]["index"]]
    rest = [k for k in weights(plain, 0) if k != "fc0.weight"]
    assert all(torch.equal(weights(plain, 0)[k], weights(flipped, 0)[k]) for k in rest)
    assert "bitflip" not in plain.info and flipped.info["bitflip"]["epoch"] == 0


def test_first_weight_layer_is_the_stem_conv_or_the_first_linear():
    data = load_dataset({"name": "digits", "size": 32, "channels": 3})
    names = {m: seeding.first_weight(build_model(RunSpec.model_validate({**TINY_BASE, "model": m}), data))[0]
             for m in ("linear", "resnet6", "one_hidden_conv")}
    assert names == {"linear": "1.weight", "resnet6": "stem.0.weight", "one_hidden_conv": "conv0.weight"}
    with pytest.raises(ValueError, match="no weight layer"):
        seeding.first_weight(torch.nn.Sequential(torch.nn.BatchNorm1d(4)))


def test_bit_change_on_a_channels_last_conv_weight_is_the_row_major_index():
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    before = conv.weight.detach().clone()
    record = seeding.flip_one_weight_(conv, 5)
    assert torch.nonzero((conv.weight != before).flatten()).flatten().tolist() == [record["index"]]


# ---------------------------------------------------------------- the kernels switch


def test_kernels_switch_leaves_cpu_results_bitwise_equal_and_says_it_has_no_effect():
    det, nondet = train(spec()), train(spec(deterministic=False))
    assert det.metrics == nondet.metrics
    assert artifact(det, "predictions_test_e0002.npy") == artifact(nondet, "predictions_test_e0002.npy")
    assert det.info["kernels"] == {"deterministic": True, "has_effect": False}
    assert nondet.info["kernels"] == {"deterministic": False, "has_effect": False}


@pytest.mark.gpu
def test_nondeterministic_kernels_run_on_cuda(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    modes = []
    real = seeding.deterministic_kernels

    def spy(enabled):
        modes.append(enabled)
        return real(enabled)

    monkeypatch.setattr(loop.seeding, "deterministic_kernels", spy)
    data = {"name": "digits", "size": 32, "channels": 3}
    result = train(spec(model="resnet6", data=data, device="cuda", deterministic=False, augment=[]))
    assert result.status == "done", result.error
    assert modes == [False] and result.info["kernels"] == {"deterministic": False, "has_effect": True}
