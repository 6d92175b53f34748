import torch

from ablab.data.sampler import iterate_batches, steps_per_epoch
from ablab.seeding import create_generator


def test_an_epoch_is_a_permutation_cut_into_batches():
    batches = list(iterate_batches(10, 4, False, create_generator("shuffle", 0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_drop_last_drops_only_the_partial_batch():
    batches = list(iterate_batches(10, 4, True, create_generator("shuffle", 0)))
    assert [len(b) for b in batches] == [4, 4]
    assert steps_per_epoch(10, 4, True) == 2 and steps_per_epoch(10, 4, False) == 3


def test_order_follows_the_shuffle_stream_only():
    a = torch.cat(list(iterate_batches(50, 8, False, create_generator("shuffle", 1))))
    b = torch.cat(list(iterate_batches(50, 8, False, create_generator("shuffle", 1))))
    c = torch.cat(list(iterate_batches(50, 8, False, create_generator("shuffle", 2))))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_consecutive_epochs_differ():
    g = create_generator("shuffle", 0)
    first = torch.cat(list(iterate_batches(50, 8, False, g)))
    second = torch.cat(list(iterate_batches(50, 8, False, g)))
    assert not torch.equal(first, second)


def test_evaluation_never_drops_examples():
    from ablab.data.base import Split
    from ablab.registry import LOSSES
    from ablab.train.evaluators import loss_and_score

    # 10 examples, eval batch 4: a dropped last batch would change the mean accuracy
    x = torch.eye(10)
    y = torch.tensor([0] * 8 + [1] * 2)
    model = torch.nn.Linear(10, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 0.0]))  # always predicts class 0
    acc = loss_and_score(model, model, Split(x, y), LOSSES.create("cross_entropy"), True, 4)["accuracy"]
    assert acc == 0.8
