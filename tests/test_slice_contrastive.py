import keras
import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.tasks import SliceConfig, SliceContrastiveHead, multi_positive_nce, sample_slices
from tests.encoder_inputs import FEATURES, random_ids

LENGTHS = [30, 9, 5, 1, 17, 30]


def _slices(config, seed=(3, 4)):
    ids = random_ids(FEATURES, LENGTHS, 30, seed=2)
    out = sample_slices({k: tf.constant(v) for k, v in ids.items()}, config,
                        tf.constant(seed, tf.int64))
    return ids, {k: v.numpy() for k, v in out.items()}


def test_slices_are_contiguous_runs_of_each_sequence_user_major():
    config = SliceConfig(num_slices=3, min_fraction=0.3, max_fraction=0.8, min_length=2)
    ids, slices = _slices(config)
    assert slices["event_type"].shape == (len(LENGTHS) * 3, 30)
    starts = set()
    for b, length in enumerate(LENGTHS):
        for k in range(3):
            row = b * 3 + k
            n = int(slices["padding_mask"][row].sum())
            low = min(max(int(np.ceil(0.3 * length)), 2), length)
            high = max(int(np.ceil(0.8 * length)), low)
            assert low <= n <= high, (b, k, n)
            # the slice is ids[b, start:start + n] for some start, in every field
            matches = [s for s in range(length - n + 1) if all(
                np.array_equal(slices[name][row, :n], ids[name][b, s:s + n])
                for name in ("event_type", "amount", "item", "time_delta"))]
            assert matches, (b, k)
            starts.add((b, matches[0]))
            assert not slices["event_type"][row, n:].any()
            assert not slices["padding_mask"][row, n:].any()
    assert len(starts) > len(LENGTHS)  # slices of a user start at different places


def test_slices_change_with_the_seed_and_repeat_for_it():
    config = SliceConfig(num_slices=2)
    _, a = _slices(config, seed=(1, 1))
    _, b = _slices(config, seed=(1, 1))
    _, c = _slices(config, seed=(9, 9))
    np.testing.assert_array_equal(a["event_type"], b["event_type"])
    assert not np.array_equal(a["padding_mask"], c["padding_mask"])


def _reference_loss(z, temperature):
    """Multi-positive InfoNCE by hand: loops over anchors and positives."""
    b, k, _ = z.shape
    flat = z.reshape(b * k, -1)
    users = np.repeat(np.arange(b), k)
    total, hits = 0.0, 0
    for i in range(b * k):
        logits = flat @ flat[i] / temperature
        others = [j for j in range(b * k) if j != i]
        log_norm = np.log(np.sum(np.exp(logits[others])))
        positives = [j for j in others if users[j] == users[i]]
        total += -np.mean([logits[j] - log_norm for j in positives])
        hits += users[others[int(np.argmax(logits[others]))]] == users[i]
    return total / (b * k), hits / (b * k)


def test_loss_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 3, 5))
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    for temperature in (0.1, 0.5, 1.0):
        loss, accuracy = multi_positive_nce(tf.constant(z, tf.float32),
                                            tf.constant(temperature, tf.float32))
        want_loss, want_accuracy = _reference_loss(z, temperature)
        np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
        assert float(accuracy) == pytest.approx(want_accuracy)


def test_head_separates_users_when_views_agree_and_config_round_trips():
    keras.utils.set_random_seed(0)  # the projection's initial weights
    head = SliceContrastiveHead(projection_dim=8, temperature=0.05)
    head.build((None, 16))
    users = tf.random.stateless_normal((16, 1, 16), seed=(0, 1))
    views = users + 0.01 * tf.random.stateless_normal((16, 4, 16), seed=(0, 2))
    loss, accuracy = head.views_loss_and_accuracy(views)
    assert float(accuracy) == 1.0 and float(loss) < np.log(3) + 0.05  # log(K-1) is the floor
    noise = tf.random.stateless_normal((16, 4, 16), seed=(0, 3))
    loss_random, accuracy_random = head.views_loss_and_accuracy(noise)
    assert float(accuracy_random) < 0.4 and float(loss_random) > 3.0
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(clone, SliceContrastiveHead)
    assert clone.get_config() == head.get_config()
    with pytest.raises(ValueError, match="num_slices"):
        SliceConfig(num_slices=1)
    with pytest.raises(ValueError, match="fractions"):
        SliceConfig(min_fraction=0.8, max_fraction=0.5)
