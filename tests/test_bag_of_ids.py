import keras
import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.tasks.bag_of_ids import BagOfIdsHead, bag_fields, bag_targets

FEATURES = [{"name": "item", "kind": "categorical", "vocab_size": 8},
            {"name": "amount", "kind": "numeric", "vocab_size": 10},
            {"name": "time_delta", "kind": "time", "vocab_size": 28}]


def test_targets_are_id_shares_without_reserved_ids():
    ids = {"item": tf.constant([[4, 4, 7, 1, 0, 0], [2, 3, 0, 0, 0, 0], [5, 6, 5, 5, 0, 0]])}
    targets = bag_targets(ids, FEATURES)["item"].numpy()
    np.testing.assert_allclose(targets[0], [0, 0, 0, 0, 2 / 3, 0, 0, 1 / 3])
    np.testing.assert_array_equal(targets[1], np.zeros(8))  # only OOV and mask
    np.testing.assert_allclose(targets[2], [0, 0, 0, 0, 0, 0.75, 0.25, 0])
    assert [s["name"] for s in bag_fields(FEATURES)] == ["item"]


def test_loss_is_soft_target_cross_entropy_per_sequence_and_head_round_trips():
    keras.utils.set_random_seed(0)
    head = BagOfIdsHead(FEATURES)
    head.build((None, 6))
    embedding = tf.random.stateless_normal((3, 6), seed=(1, 2))
    targets = bag_targets({"item": tf.constant([[4, 4, 7], [5, 0, 0], [6, 6, 6]])}, FEATURES)
    loss, metrics = head.loss_and_metrics(embedding, targets, global_batch=4)
    logits = head(embedding)["item"].numpy()
    log_prob = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -(targets["item"].numpy() * log_prob).sum() / 4
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert set(metrics) == {"bag/item/loss"}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert clone.get_config() == head.get_config()
    # training moves the predicted distribution towards the bag
    _fit(head, embedding, targets, steps=100)
    probs = tf.nn.softmax(head(embedding)["item"]).numpy()
    np.testing.assert_allclose(probs, targets["item"].numpy(), atol=0.05)


def test_squared_loss_reconstructs_the_normalised_binary_bag():
    keras.utils.set_random_seed(0)
    head = BagOfIdsHead(FEATURES, loss="squared")
    head.build((None, 6))
    embedding = tf.random.stateless_normal((3, 6), seed=(1, 2))
    targets = bag_targets({"item": tf.constant([[4, 4, 7], [5, 0, 0], [1, 1, 0]])}, FEATURES)
    held = np.array([[0, 0, 0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0, 0], [0] * 8], float)
    held[0] /= np.sqrt(2)  # each id once, whatever its count; no ids: all zero
    loss, _ = head.loss_and_metrics(embedding, targets, global_batch=4)
    np.testing.assert_allclose(float(loss), (held ** 2).sum() / 4, rtol=1e-6)  # zero decoder
    _fit(head, embedding, targets, steps=200)
    np.testing.assert_allclose(head(embedding)["item"].numpy(), held, atol=0.05)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert clone.loss == "squared" and clone.get_config() == head.get_config()
    with pytest.raises(ValueError, match="bag_of_ids loss must be one of"):
        BagOfIdsHead(FEATURES, loss="hinge")


def _fit(head, embedding, targets, steps):
    """Trains the head alone on fixed embeddings with Adam."""
    optimizer = keras.optimizers.Adam(0.05)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss, _ = head.loss_and_metrics(embedding, targets, global_batch=3)
        optimizer.apply_gradients(zip(tape.gradient(loss, head.trainable_variables),
                                      head.trainable_variables, strict=True))
