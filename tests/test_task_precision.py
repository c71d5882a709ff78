"""Every pre-training loss computes in float32 under both mixed-precision policies."""

import pytest
import tensorflow as tf

from autorisk_tf.tasks import MaskedEventHead, QuickThoughtHead
from autorisk_tf.tasks.bag_of_ids import BagOfIdsHead, bag_targets
from autorisk_tf.tasks.slice_contrastive import SliceContrastiveHead
from tests.layer_testing import assert_float32_internals, op_dtypes

FEATURES = [{"name": "c", "kind": "categorical", "vocab_size": 9},
            {"name": "t", "kind": "text", "vocab_size": 12}]


def _losses(policy):
    """`(name, loss function)` of every head built under `policy`, on inputs of its dtype."""
    dtype = policy.split("_")[1]
    sequence = tf.cast(tf.random.stateless_normal((2, 5, 8), seed=(0, 1)), dtype)
    embedding = tf.cast(tf.random.stateless_normal((4, 8), seed=(0, 2)), dtype)
    views = tf.cast(tf.random.stateless_normal((4, 3, 8), seed=(0, 3)), dtype)
    masked = MaskedEventHead(FEATURES, dtype=policy)
    masked.build((None, 8))
    targets = {"c": tf.constant([[4, 5, 4, 0, 0], [5, 8, 4, 4, 1]]),
               "t": tf.fill((2, 5, 3), 6),
               "masked_weights": tf.constant([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]], tf.float32)}
    qt = QuickThoughtHead(projection_dim=4, dtype=policy)
    qt.build((None, 8))
    slices = SliceContrastiveHead(projection_dim=4, dtype=policy)
    slices.build((None, 8))
    bag = BagOfIdsHead(FEATURES, dtype=policy)
    bag.build((None, 8))
    bags = bag_targets({"c": tf.constant([[4, 4, 7], [5, 0, 0], [6, 6, 6], [8, 4, 5]])},
                       FEATURES)
    return [("masked_event", lambda: masked.losses_and_metrics(sequence, targets, 4.0)[0]),
            ("quick_thought", lambda: qt.loss_and_accuracy(embedding, embedding[::-1])[0]),
            ("slices", lambda: slices.views_loss_and_accuracy(views)[0]),
            ("bag_of_ids", lambda: bag.loss_and_metrics(embedding, bags, 4)[0])]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_losses_compute_in_float32(policy):
    for name, loss in _losses(policy):
        value = loss()
        assert value.dtype == tf.float32, name
        assert_float32_internals(loss)
        found = op_dtypes(loss)
        # the cross-entropies are there to be checked, in float32
        cross_entropy = {"SparseSoftmaxCrossEntropyWithLogits", "LogSoftmax", "Softmax",
                         "SigmoidCrossEntropyWithLogits", "Log", "Exp"} & set(found)
        assert cross_entropy, f"{name}: no cross-entropy op found in {sorted(found)}"
        assert all(found[op] == {"float32"} for op in cross_entropy), (name, found)
