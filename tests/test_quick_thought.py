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


def _reference_loss(first, second, temperature):
    """Symmetric in-batch cross-entropy and accuracy, by hand (numpy, float64)."""
    a = first / np.linalg.norm(first, axis=1, keepdims=True)
    b = second / np.linalg.norm(second, axis=1, keepdims=True)
    logits = a @ b.T / temperature
    rows = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # first -> second
    cols = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))  # second -> first
    n = len(a)
    loss = 0.5 * (-np.mean(np.diag(rows)) - np.mean(np.diag(cols)))
    accuracy = 0.5 * (np.mean(logits.argmax(1) == np.arange(n))
                      + np.mean(logits.argmax(0) == np.arange(n)))
    return loss, accuracy


def _identity_head(temperature):
    head = QuickThoughtHead(projection_dim=3, temperature=temperature)
    head.build((None, 3))
    head.projection.set_weights([np.eye(3, dtype="float32"), np.zeros(3, "float32")])
    return head


FIRST = np.array([[1.0, 0.2, -0.5], [0.1, 1.0, 0.3], [-0.7, 0.4, 1.0], [0.9, -0.8, 0.2]])
SECOND = np.array([[0.8, 0.5, -0.1], [0.6, 0.9, 0.0], [-0.2, -0.1, 1.0], [0.3, 0.2, 0.4]])


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0])
def test_loss_equals_a_hand_computation_in_both_directions(temperature):
    head = _identity_head(temperature)
    loss, accuracy = head.loss_and_accuracy(tf.constant(FIRST, tf.float32),
                                            tf.constant(SECOND, tf.float32))
    want_loss, want_accuracy = _reference_loss(FIRST, SECOND, temperature)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    assert float(accuracy) == pytest.approx(want_accuracy)
    # The two directions differ on this example, so a one-way loss would not pass.
    a = FIRST / np.linalg.norm(FIRST, axis=1, keepdims=True)
    b = SECOND / np.linalg.norm(SECOND, axis=1, keepdims=True)
    logits = a @ b.T / temperature
    row_way = -np.mean(np.diag(logits) - np.log(np.exp(logits).sum(axis=1)))
    column_way = -np.mean(np.diag(logits) - np.log(np.exp(logits).sum(axis=0)))
    assert abs(row_way - column_way) > 1e-3


GATHER_SCRIPT = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.test_quick_thought import FIRST, SECOND, _identity_head
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    head = _identity_head(0.5)
first, second = tf.constant(FIRST, tf.float32), tf.constant(SECOND, tf.float32)

def replica_step():
    context = tf.distribute.get_replica_context()
    r = context.replica_id_in_sync_group
    mine = lambda x: x[2 * r: 2 * r + 2]  # each replica holds 2 of the 4 pairs
    with tf.GradientTape() as tape:
        loss, _ = head.loss_and_accuracy(context.all_gather(mine(first), axis=0),
                                         context.all_gather(mine(second), axis=0))
        loss = loss / 2  # as the training loop does: every replica adds 1/replicas
    grads = tape.gradient(loss, head.trainable_weights)
    return loss, grads

loss, grads = strategy.run(tf.function(replica_step))
total = strategy.reduce("SUM", loss, axis=None)
summed = [strategy.reduce("SUM", g, axis=None) for g in grads]
with tf.GradientTape() as tape:
    single, _ = head.loss_and_accuracy(first, second)
want = tape.gradient(single, head.trainable_weights)
print(json.dumps({"total": float(total), "single": float(single),
                  "grad_error": max(float(tf.reduce_max(tf.abs(a - b)))
                                    for a, b in zip(summed, want))}))
"""


def test_gathered_negatives_across_replicas_equal_one_replica():
    import json
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", GATHER_SCRIPT], capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["single"] == pytest.approx(_reference_loss(FIRST, SECOND, 0.5)[0], rel=1e-5)
    assert out["total"] == pytest.approx(out["single"], rel=1e-5)
    assert out["grad_error"] < 1e-5
