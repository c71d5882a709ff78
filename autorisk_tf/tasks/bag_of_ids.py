"""Bag of ids: predict from the sequence embedding which ids of each field the sequence holds.

A distributed-bag-of-words objective (PV-DBOW, Le and Mikolov 2014) on event fields: the
pooled embedding must predict the distribution of each categorical field's ids over the
whole sequence. It makes the embedding carry the set of ids a user touched, which a bag of
items or its SVD knows and which masked events and contrastive slices do not ask for. It
reads the embedding of the masked-event pass, so it costs no extra encoder pass.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from autorisk_tf.data.artifacts import NUM_RESERVED_IDS
from autorisk_tf.layers.field_embedding import embedding_specs
from autorisk_tf.layers.gated_separable_conv1d import PACKAGE


def bag_fields(features: list[dict]) -> list[dict]:
    """The fields whose bags are predicted: every categorical field with vocabulary ids."""
    return [spec for spec in features
            if spec["kind"] == "categorical" and spec["vocab_size"] > NUM_RESERVED_IDS]


def bag_targets(ids: dict, features: list[dict]) -> dict:
    """Each field's distribution of vocabulary ids over every sequence of a batch.

    Args:
        ids: dict. Unmasked ids [B, T] per field ([B, T, L] for multi-valued fields).
        features: list of dict. Feature specs; `bag_fields` of them are used.

    Returns:
        `{field: float32 [B, V]}`: counts of each vocabulary id (reserved ids, padding,
        missing and unknown values excluded) divided by their sum; all zero for a sequence
        with none.
    """
    out = {}
    for spec in bag_fields(features):
        size = spec["vocab_size"]
        flat = tf.reshape(ids[spec["name"]], [tf.shape(ids[spec["name"]])[0], -1])
        counts = tf.math.bincount(tf.cast(flat, tf.int32), minlength=size,
                                  maxlength=size, axis=-1, dtype=tf.float32)
        counts = counts * tf.cast(tf.range(size) >= NUM_RESERVED_IDS, tf.float32)[None, :]
        total = tf.reduce_sum(counts, axis=-1, keepdims=True)
        out[spec["name"]] = counts / tf.maximum(total, 1.0)
    return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class BagOfIdsHead(keras.layers.Layer):
    """One softmax over each field's vocabulary, from the sequence embedding.

    Args:
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`); the
            categorical ones with a vocabulary get a classifier.

    Example:
    ```python
    head = BagOfIdsHead(features)
    loss, metrics = head.loss_and_metrics(embedding, bag_targets(ids, features), 32)
    ```

    References:
        Le and Mikolov, "Distributed Representations of Sentences and Documents" (2014).
    """

    def __init__(self, features: list[dict], **kwargs):
        super().__init__(**kwargs)
        self.features = embedding_specs(features)
        self.classifiers = {spec["name"]: keras.layers.Dense(
            spec["vocab_size"], name=f"bag_{spec['name']}", dtype=self.dtype_policy)
            for spec in bag_fields(self.features)}

    def build(self, input_shape):
        for classifier in self.classifiers.values():
            classifier.build(input_shape)

    def call(self, embedding):
        return {name: classifier(embedding) for name, classifier in self.classifiers.items()}

    def loss_and_metrics(self, embedding, targets: dict, global_batch: int):
        """Summed soft-target cross-entropy over fields, per sequence of the global batch.

        Args:
            embedding: float [b, E]. This replica's sequence embeddings.
            targets: dict. `bag_targets` of the same rows.
            global_batch: int. Sequences in the global batch (the loss divisor).

        Returns:
            `(loss, metrics)`: the loss and `bag/<field>/loss` for every field.
        """
        logits = self(embedding)
        loss, metrics = 0.0, {}
        for name, field_logits in logits.items():
            target = targets[name]
            log_prob = tf.nn.log_softmax(ops.cast(field_logits, "float32"), axis=-1)
            per_row = -tf.reduce_sum(target * log_prob, axis=-1)
            field_loss = tf.reduce_sum(per_row) / global_batch
            metrics[f"bag/{name}/loss"] = field_loss
            loss += field_loss
        return loss, metrics

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features]})
        return config
