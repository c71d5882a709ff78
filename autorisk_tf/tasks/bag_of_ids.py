"""Bag of ids: predict from the sequence embedding which ids of each field the sequence holds.

A distributed-bag-of-words objective (PV-DBOW, Le and Mikolov 2014) on event fields: the
pooled embedding must predict the distribution of each categorical field's ids over the
whole sequence. It makes the embedding carry the set of ids a user touched, which a bag of
items or its SVD knows and which masked events and contrastive slices do not ask for. It
reads the embedding of the masked-event pass, so it costs no extra encoder pass.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.field_embedding import embedding_specs
from autorisk_tf.layers.id_bag import bag_fields, bag_targets
from autorisk_tf.tasks.base import StepContext, Task

LOSSES = ("softmax", "squared")


@dataclasses.dataclass(frozen=True)
class BagConfig:
    """How the bag is predicted (the `bag_of_ids:` section of a training config).

    Args:
        loss: str. `softmax`: cross-entropy against each field's id distribution
            (PV-DBOW). `squared`: a linear decoder reconstructs the L2-normalised binary
            bag of each field (which ids the sequence holds, each once) with a squared
            error; its best linear code is the bag's top singular subspace, what a
            TruncatedSVD of the bag keeps. Defaults to `softmax`.
        separate_ids: bool. With the encoder's `ids` pooling, that part of the embedding
            gets a decoder of its own and the shared decoder reads the other parts only,
            so they still have to carry the bag themselves. Defaults to False (one
            decoder reads the whole embedding).
    """

    loss: str = "softmax"
    separate_ids: bool = False

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"bag_of_ids loss must be one of {LOSSES}, got {self.loss!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class BagOfIdsHead(keras.layers.Layer):
    """One linear decoder over each field's vocabulary, from the sequence embedding.

    Args:
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`); the
            categorical ones with a vocabulary get a decoder.
        loss: str. `softmax` or `squared` (`BagConfig`). A squared-loss decoder starts at
            zero, so its first steps send no large, arbitrary error into the encoder.
            Defaults to `softmax`.

    Example:
    ```python
    head = BagOfIdsHead(features)
    loss, metrics = head.loss_and_metrics(embedding, bag_targets(ids, features), 32)
    ```

    References:
        Le and Mikolov, "Distributed Representations of Sentences and Documents" (2014).
    """

    def __init__(self, features: list[dict], loss: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        BagConfig(loss)  # validates
        self.features = embedding_specs(features)
        self.loss = loss
        self.classifiers = {spec["name"]: keras.layers.Dense(
            spec["vocab_size"], name=f"bag_{spec['name']}", dtype=self.dtype_policy,
            kernel_initializer="zeros" if loss == "squared" else "glorot_uniform")
            for spec in bag_fields(self.features)}

    def build(self, input_shape):
        for classifier in self.classifiers.values():
            classifier.build(input_shape)

    def call(self, embedding):
        return {name: classifier(embedding) for name, classifier in self.classifiers.items()}

    def loss_and_metrics(self, embedding, targets: dict, global_batch: int,
                         id_weights: dict | None = None):
        """The loss summed over fields, per sequence of the global batch.

        `softmax`: soft-target cross-entropy against the id distribution. `squared`: the
        squared distance between the decoder's output and the L2-normalised binary bag
        (each held id weighted by `id_weights`, when given).

        Args:
            embedding: float [b, E]. This replica's sequence embeddings.
            targets: dict. `bag_targets` of the same rows.
            global_batch: int. Sequences in the global batch (the loss divisor).
            id_weights: dict or None. Field -> float [V], the `squared` target's weight of
                each id (`IdBag.id_weights`: the bag the `ids` pooling reads). Defaults to
                None (each 1).

        Returns:
            `(loss, metrics)`: the loss and `bag/<field>/loss` for every field.
        """
        logits = self(embedding)
        loss, metrics = 0.0, {}
        for name, field_logits in logits.items():
            target, field_logits = targets[name], ops.cast(field_logits, "float32")
            if self.loss == "squared":
                held = tf.cast(target > 0, tf.float32)
                if id_weights is not None:
                    held = held * tf.cast(id_weights[name], tf.float32)[None, :]
                held = tf.math.l2_normalize(held, axis=-1)  # all zero stays zero
                per_row = tf.reduce_sum(tf.square(field_logits - held), axis=-1)
            else:
                log_prob = tf.nn.log_softmax(field_logits, axis=-1)
                per_row = -tf.reduce_sum(target * log_prob, axis=-1)
            field_loss = tf.reduce_sum(per_row) / global_batch
            metrics[f"bag/{name}/loss"] = field_loss
            loss += field_loss
        return loss, metrics

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features],
                       "loss": self.loss})
        return config


class BagOfIdsTask(Task):
    """Bag of ids as a pre-training task (weight: `curriculum.bag_of_ids_weight`).

    It reads the embedding of the masked-event pass (`masked`, made by the masked-event
    task, which is always enabled), so it adds no encoder pass. With `separate_ids` and the
    encoder's `ids` pooling, that part of the embedding gets a decoder of its own.
    """

    name = "bag_of_ids"
    config_class = BagConfig

    def build_heads(self, dtype) -> dict:
        # Constructed in this order (initializers draw their seeds when constructed), so
        # that a seed gives the same initial weights as before tasks were registered.
        head = BagOfIdsHead(self.feature_specs, self.settings.loss, name="bag_of_ids_head",
                            dtype=dtype)
        ids_width = self.encoder.pooling_dims.get("ids", 0)
        ids_head = None
        if self.settings.separate_ids and ids_width:
            ids_head = BagOfIdsHead(self.feature_specs, self.settings.loss,
                                    name="ids_bag_head", dtype=dtype)
            ids_head.build((None, ids_width))
        head.build((None, self.encoder.embedding_dim - (ids_width if ids_head else 0)))
        return {"bag_head": head, **({"ids_bag_head": ids_head} if ids_head else {})}

    @property
    def enabled(self) -> bool:
        return self.config.curriculum.bag_of_ids_weight > 0

    def weight_at(self, step: int) -> float:
        return self.config.curriculum.bag_of_ids_weight

    def make_inputs(self, ids: dict, seed: tf.Tensor) -> dict:
        return {"bag": bag_targets(ids, self.feature_specs)}

    def loss_and_metrics(self, context: StepContext) -> tuple:
        loss, metrics = self.bag_loss(context.encoded("masked")["embedding"],
                                      context.example["bag"])
        metrics["bag/loss"] = loss
        return loss, metrics

    def bag_loss(self, embedding, targets: dict) -> tuple:
        """The loss and metrics of one decoder, or of one more for the `ids` part.

        Args:
            embedding: float [b, E]. This replica's sequence embeddings (masked pass).
            targets: dict. `bag_targets` of the same rows.

        Returns:
            `(loss, metrics)`: with `separate_ids`, the sum of both decoders' losses, and
            the `ids` decoder's metrics under `bag_ids/`.
        """
        batch = self.config.input.batch_size
        id_bag = self.encoder.id_bag
        # The decoder that reads the `ids` part reconstructs the bag weighted as it is (binary
        # weights are all ones: no weights to apply).
        weights = id_bag.id_weights() if id_bag is not None and id_bag.weighting == "idf" \
            else None
        head, ids_head = self.heads["bag_head"], self.heads.get("ids_bag_head")
        if ids_head is None:
            return head.loss_and_metrics(embedding, targets, batch, weights)
        parts = self.encoder.split_embedding(embedding)
        ids_loss, ids_metrics = ids_head.loss_and_metrics(parts.pop("ids"), targets, batch,
                                                          weights)
        loss, metrics = head.loss_and_metrics(tf.concat(list(parts.values()), axis=-1),
                                              targets, batch)
        metrics.update({key.replace("bag/", "bag_ids/"): value
                        for key, value in ids_metrics.items()})
        return loss + ids_loss, metrics
