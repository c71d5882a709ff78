import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.tasks import PairConfig, QuickThoughtHead, split_pairs
from tests.encoder_inputs import FEATURES, random_ids

LENGTHS = [30, 9, 5, 1, 17, 30]


def _split(config, seed=(3, 4)):
    ids = random_ids(FEATURES, LENGTHS, 30, seed=2)
    first, second = split_pairs({k: tf.constant(v) for k, v in ids.items()}, config,
                                tf.constant(seed, tf.int64))
    return ids, {k: v.numpy() for k, v in first.items()}, {k: v.numpy() for k, v in
                                                           second.items()}


def _half_lengths(first, second, row, length):
    """Real-event counts of both halves; asserts they split `length`, each >= 4 when possible."""
    n1, n2 = first["padding_mask"][row].sum(), second["padding_mask"][row].sum()
    assert n1 + n2 == length
    if length >= 8:
        assert n1 >= 4 and n2 >= 4
    return n1, n2


def test_cut_gives_the_past_and_the_future():
    ids, first, second = _split(PairConfig(split="cut", min_length=4))
    for row, length in enumerate(LENGTHS):
        n1, n2 = _half_lengths(first, second, row, length)
        for name in ("event_type", "item", "time_delta"):
            joined = np.concatenate([first[name][row, :n1], second[name][row, :n2]])
            np.testing.assert_array_equal(joined, ids[name][row, :length])
            assert not first[name][row, n1:].any() and not second[name][row, n2:].any()


def test_subsets_keep_order_and_partition_the_events():
    ids, first, second = _split(PairConfig(split="subsets", min_length=4))
    for row, length in enumerate(LENGTHS):
        _half_lengths(first, second, row, length)
    row, length = 0, LENGTHS[0]
    n1, n2 = _half_lengths(first, second, row, length)
    assert not np.array_equal(first["event_type"][row, :n1], ids["event_type"][row, :n1])
    # Each half is a subsequence of the original: event_type*1000+amount keys are unique
    # enough to match in order.
    original = list(zip(ids["event_type"][row, :length], ids["amount"][row, :length],
                        strict=True))
    for half, n in ((first, n1), (second, n2)):
        events = list(zip(half["event_type"][row, :n], half["amount"][row, :n], strict=True))
        it = iter(original)
        assert all(any(e == o for o in it) for e in events)
    assert sorted(original) == sorted(
        list(zip(first["event_type"][row, :n1], first["amount"][row, :n1], strict=True))
        + list(zip(second["event_type"][row, :n2], second["amount"][row, :n2], strict=True)))


def test_head_finds_partners_when_halves_agree():
    head = QuickThoughtHead(projection_dim=8, temperature=0.05)
    head.build((None, 16))
    x = tf.random.stateless_normal((32, 16), seed=(0, 1))
    loss, accuracy = head.loss_and_accuracy(x, x + 0.01)
    assert float(accuracy) == 1.0 and float(loss) < 0.1
    loss_random, accuracy_random = head.loss_and_accuracy(
        x, tf.random.stateless_normal((32, 16), seed=(0, 2)))
    assert float(accuracy_random) < 0.25 and float(loss_random) > 1.0
    with pytest.raises(ValueError, match="split"):
        PairConfig(split="halves")
