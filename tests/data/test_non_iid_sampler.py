"""The sampler registry: ``non_iid`` batches (seed 002 §4.4.4, Table 4.1: k classes with replacement × B/k)."""

import copy
import hashlib

import pytest
import torch

from ablab.artifacts import checkpoint_name, load_checkpoint
from ablab.registry import SAMPLERS
from ablab.seeding import create_generator
from ablab.spec import RunSpec
from ablab.train.build import build_run
from ablab.train.inputs import StoredFile, UnitFiles
from ablab.train.loop import train
from conftest import TINY_BASE, run_refused, tiny_study

LABELS = torch.arange(200) % 10  # 10 classes of 20 examples


def batches(k: int, batch: int, seed: int, n_epochs: int = 1, labels=LABELS, order: str = "blocks") -> list[torch.Tensor]:
    sampler = SAMPLERS.create({"name": "non_iid", "k": k, "order": order}, labels=labels)
    g = create_generator("shuffle", seed)
    return [b for _ in range(n_epochs) for b in sampler.epoch(len(labels), batch, False, g)]


@pytest.mark.parametrize("k, batch", [(1, 8), (2, 16), (4, 32), (10, 40)])
def test_every_batch_is_full_and_holds_at_most_k_classes_in_blocks_of_b_over_k(k, batch):
    epoch = batches(k, batch, seed=0, n_epochs=3)
    assert len(epoch) == 3 * (200 // batch)  # an epoch: ⌊n/B⌋ batches
    for b in epoch:
        assert len(b) == batch and b.dtype == torch.int64
        classes = LABELS[b]
        assert len(classes.unique()) <= k
        blocks = classes.reshape(-1, batch // k)  # each draw's B/k examples are consecutive, one class
        assert (blocks == blocks[:, :1]).all()
        for c in classes.unique():  # a class drawn j times gives j·B/k distinct examples (it has 20)
            members = b[classes == c]
            assert len(members.unique()) == min(len(members), 20)


@pytest.mark.parametrize("k, batch", [(2, 16), (4, 32)])
def test_the_default_order_shuffles_the_same_examples_within_the_batch(k, batch):
    """``shuffled`` (the default) holds the examples ``blocks`` draws, from the same stream, in random order."""
    assert SAMPLERS.create({"name": "non_iid", "k": k}, labels=LABELS).order == "shuffled"
    blocks, mixed = batches(k, batch, seed=5), batches(k, batch, seed=5, n_epochs=4, order="shuffled")
    assert sorted(blocks[0].tolist()) == sorted(mixed[0].tolist())  # the first batch: same draws, then permuted
    consecutive = distinct = 0
    for b in mixed:
        assert len(b) == batch and len(LABELS[b].unique()) <= k
        if len(LABELS[b].unique()) == k:  # (a class drawn twice fills the batch alone: in blocks trivially)
            distinct += 1
            blocks_of_one_class = LABELS[b].reshape(-1, batch // k)
            consecutive += int((blocks_of_one_class == blocks_of_one_class[:, :1]).all())
    assert distinct > 3 and consecutive == 0  # no batch keeps its classes in blocks (P ≈ 2e-4 at k = 2, B = 16)


def test_classes_are_drawn_with_replacement():
    """k = 4 of 10 classes: some batch repeats a class (P(no repeat in 50 batches) = 0.504^50 ≈ 1e-15)."""
    assert any(len(LABELS[b].unique()) < 4 for b in batches(4, 8, seed=1, n_epochs=2))


def test_same_seed_same_batches_other_seed_other_batches():
    a, b, c = batches(2, 16, seed=3), batches(2, 16, seed=3), batches(2, 16, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_a_class_smaller_than_its_slots_repeats_only_after_all_its_members():
    labels = torch.tensor([0] * 3 + [1] * 30)
    for b in batches(1, 8, seed=0, labels=labels):
        if labels[b[0]] == 0:  # 8 slots from 3 examples: each example 2 or 3 times
            counts = torch.bincount(b, minlength=3)[:3]
            assert counts.sum() == 8 and counts.min() >= 2


def test_iid_is_the_default_and_its_epoch_is_a_permutation():
    spec = RunSpec.model_validate({**copy.deepcopy(TINY_BASE), "batch_size": 100})
    assert spec.sampler == {"name": "iid"}
    run = build_run(spec)
    idx = torch.cat(list(run.sampler.epoch(1257, 100, False, create_generator("shuffle", 0))))
    assert sorted(idx.tolist()) == list(range(1257))


def test_non_iid_needs_class_labels():
    with pytest.raises(ValueError, match="classification dataset"):
        SAMPLERS.create({"name": "non_iid", "k": 2}, labels=torch.rand(10))


@pytest.mark.parametrize("sampler, words", [
    ({"name": "non_iid", "k": 11}, "k = 11 classes per batch, but the training split has only 10 classes"),
    ({"name": "non_iid", "k": 3}, "k = 3 does not divide batch_size 128"),
    ({"name": "non_iid", "k": 0}, "greater than 0"),
    ({"name": "non_iid_x"}, "Known: "),
])
def test_bad_sampler_is_refused(sampler, words, write_study, tmp_path, capsys):
    study = tiny_study()
    study["base"]["sampler"] = sampler
    err, path = run_refused(write_study, study, tmp_path, capsys)
    assert path in err and "sampler" in err and words in err


# ---- resume: the sampler's state is the shuffle stream's, saved at every epoch end ------------------------

RESUME = {**copy.deepcopy(TINY_BASE), "model": {"name": "mlp", "widths": [16], "norm": "batchnorm"},
          "epochs": 3, "batch_size": 64, "lr_multipliers": {"bias_norm": 0.1},
          "record": {"every_steps": 2, "eval_splits": ["test"], "checkpoints": {"epochs": [1], "final": True}}}


@pytest.mark.parametrize("sampler", ["iid", {"name": "non_iid", "k": 2}])
def test_a_continued_run_is_bitwise_the_uninterrupted_one(sampler):
    spec = RunSpec.model_validate({**RESUME, "sampler": sampler})
    full = train(spec)
    assert full.status == "done", full.error
    data = full.artifacts[checkpoint_name(1)]
    cont_spec = RunSpec.model_validate({**RESUME, "sampler": sampler, "init_from": {"run": spec.id, "epoch": 1}})
    cont = train(cont_spec, files=UnitFiles({(spec.id, 1): StoredFile(hashlib.sha256(data).hexdigest(), data=data)}))
    assert cont.status == "done", cont.error
    step1 = load_checkpoint(data)["step"]
    assert step1 == 1257 // 64 + (sampler == "iid")  # non_iid: ⌊n/B⌋ full batches; iid keeps the partial one
    assert [r for r in cont.metrics if r[0] > step1] == [r for r in full.metrics if r[0] > step1] != []
    final = checkpoint_name(3)
    a, b = load_checkpoint(full.artifacts[final])["model"], load_checkpoint(cont.artifacts[final])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
