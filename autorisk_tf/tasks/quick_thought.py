"""Quick thought: embed two halves of each sequence, find each half's partner in the batch."""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.event_preprocessor import PADDING_MASK
from autorisk_tf.tasks.base import StepContext, Task

SPLITS = ("cut", "subsets")


@dataclasses.dataclass(frozen=True)
class PairConfig:
    """How sequences are split into two halves (the `quick_thought:` section).

    Args:
        split: str. `cut` (a random cut point: the past and the future) or `subsets`
            (each event goes to one half at random, order kept). Defaults to `cut`.
        min_length: int. Fewest events per half, in both modes, where the sequence is long
            enough (a sequence shorter than twice this is split in the middle).
            Defaults to 4.
        projection_dim: int. Width of the projection before the similarity. Defaults to 128.
        temperature: float. Initial softmax temperature. Defaults to 0.1.
        learn_temperature: bool. Learn the temperature. Defaults to True.
    """

    split: str = "cut"
    min_length: int = 4
    projection_dim: int = 128
    temperature: float = 0.1
    learn_temperature: bool = True

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")


def compact_events(ids: dict, keep: tf.Tensor) -> dict:
    """Moves the kept events of each row to the front (order kept) and pads the rest."""
    steps = tf.shape(keep)[1]
    position = tf.range(steps)[None, :]
    order = tf.argsort(tf.where(keep, position, position + steps), axis=1, stable=True)
    new_mask = position < tf.reduce_sum(tf.cast(keep, tf.int32), axis=1, keepdims=True)
    out = {}
    for name, value in ids.items():
        if name == PADDING_MASK:
            out[name] = new_mask
            continue
        moved = tf.gather(value, order, axis=1, batch_dims=1)
        row_mask = tf.reshape(new_mask, tf.concat(
            [tf.shape(new_mask), tf.ones([tf.rank(moved) - 2], tf.int32)], 0))
        out[name] = tf.where(row_mask, moved, tf.zeros_like(moved))
    return out


def split_pairs(ids: dict, config: PairConfig, seed: tf.Tensor) -> tuple[dict, dict]:
    """Splits every sequence of a batch into two halves.

    Args:
        ids: dict. Per-step id tensors [B, T, ...] and `padding_mask` (other entries are
            dropped).
        config: PairConfig. Split mode and minimum length.
        seed: int64 tensor [2]. Seed of the stateless random choices.

    Returns:
        `(first, second)`: two id dicts of the same shapes; each row's events are split
        between them, in order, left-aligned.
    """
    mask = tf.cast(ids[PADDING_MASK], tf.bool)
    steps = {name: v for name, v in ids.items()
             if name == PADDING_MASK or (v.shape.rank or 0) >= 2}
    length = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    position = tf.range(tf.shape(mask)[1])[None, :]
    # Size of the first half: uniform in [low, length - low].
    low = tf.minimum(config.min_length, length // 2)
    span = length - 2 * low + 1
    u = tf.random.stateless_uniform(tf.shape(length), seed=seed)
    size = low + tf.minimum(tf.cast(u * tf.cast(span, tf.float32), tf.int32), span - 1)
    if config.split == "cut":
        first = position < size[:, None]
    else:  # a random subset of that size: the events with the smallest random keys
        keys = tf.random.stateless_uniform(tf.shape(mask), seed=seed + tf.constant([0, 1],
                                                                                  tf.int64))
        keys = tf.where(mask, keys, 2.0)
        rank = tf.argsort(tf.argsort(keys, axis=1), axis=1)
        first = rank < size[:, None]
    return compact_events(steps, first & mask), compact_events(steps, ~first & mask)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuickThoughtHead(keras.layers.Layer):
    """In-batch pairing of half-sequence embeddings with a symmetric cross-entropy.

    Both halves go through the same encoder (a twin network); their embeddings are
    projected, L2-normalised and compared by cosine similarity over a temperature. Row i
    of the [B, B] similarity matrix must pick column i (its own other half), in both
    directions.

    Args:
        projection_dim: int. Projection width. Defaults to 128.
        temperature: float. Initial temperature. Defaults to 0.1.
        learn_temperature: bool. Learn it (as a log, clipped to [0.01, 1]).
            Defaults to True.

    Example:
    ```python
    head = QuickThoughtHead()
    loss, accuracy = head.loss_and_accuracy(encoder(first)["embedding"],
                                            encoder(second)["embedding"])
    ```

    References:
        Logeswaran and Lee, "An efficient framework for learning sentence
        representations" (2018).
    """

    def __init__(self, projection_dim: int = 128, temperature: float = 0.1,
                 learn_temperature: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.projection_dim = projection_dim
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.projection = keras.layers.Dense(projection_dim, name="projection",
                                             dtype=self.dtype_policy)

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.log_temperature = self.add_weight(
            name="log_temperature", shape=(),
            initializer=keras.initializers.Constant(math.log(self.temperature)),
            trainable=self.learn_temperature)

    def call(self, embedding):
        z = ops.cast(self.projection(embedding), "float32")
        return z / ops.maximum(ops.norm(z, axis=-1, keepdims=True), 1e-6)

    def loss_and_accuracy(self, first, second):
        """Symmetric in-batch cross-entropy and top-1 accuracy.

        Args:
            first: float [B, E]. Embeddings of the first halves.
            second: float [B, E]. Embeddings of the second halves.

        Returns:
            `(loss, accuracy)`: scalars averaged over the 2B directions of the batch.
        """
        a, b = self(first), self(second)
        temperature = ops.exp(ops.clip(self.log_temperature, math.log(0.01), 0.0))
        logits = ops.matmul(a, ops.transpose(b)) / temperature
        labels = tf.range(tf.shape(logits)[0])
        loss = 0.5 * (tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, logits)) + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, tf.transpose(logits))))
        hits = tf.cast(tf.argmax(logits, 1, output_type=tf.int32) == labels, tf.float32)
        hits_t = tf.cast(tf.argmax(logits, 0, output_type=tf.int32) == labels, tf.float32)
        return loss, 0.5 * (tf.reduce_mean(hits) + tf.reduce_mean(hits_t))

    def get_config(self):
        config = super().get_config()
        config.update({"projection_dim": self.projection_dim, "temperature": self.temperature,
                       "learn_temperature": self.learn_temperature})
        return config


class QuickThoughtTask(Task):
    """Quick thought as a pre-training task (weight: `curriculum.quick_thought_*`, ramped).

    Its negatives are the whole global batch: each replica gathers every replica's
    embeddings and computes the same global loss, so it adds 1/replicas of it.
    """

    name = "quick_thought"
    config_class = PairConfig
    seed_offset = 7
    progress_metrics = ("qt/accuracy",)

    def build_heads(self, dtype) -> dict:
        head = QuickThoughtHead(self.settings.projection_dim, self.settings.temperature,
                                self.settings.learn_temperature, name="quick_thought_head",
                                dtype=dtype)
        head.build((None, self.encoder.embedding_dim))
        return {"qt_head": head}

    def weight_at(self, step: int) -> float:
        return self.config.curriculum.quick_thought_weight_at(step)

    def make_inputs(self, ids: dict, seed: tf.Tensor) -> dict:
        first, second = split_pairs(ids, self.settings, seed)
        return {"first": first, "second": second}

    def loss_and_metrics(self, context: StepContext) -> tuple:
        first = context.gathered(context.encoded("first")["embedding"])
        second = context.gathered(context.encoded("second")["embedding"])
        loss, accuracy = self.heads["qt_head"].loss_and_accuracy(first, second)
        share = loss / context.replicas
        return share, {"qt/loss": share, "qt/accuracy": accuracy / context.replicas}

    def evaluation(self, example: dict) -> dict:
        """Top-1 pairing accuracy of one batch, its chance level and a batch count."""
        head = self.heads["qt_head"]
        a = head(self.encoder(example["first"], training=False)["embedding"])
        b = head(self.encoder(example["second"], training=False)["embedding"])
        hits = tf.argmax(tf.matmul(a, b, transpose_b=True), 1, output_type=tf.int32)
        size = tf.shape(a)[0]
        return {"accuracy": tf.reduce_mean(tf.cast(hits == tf.range(size), tf.float64)),
                "chance": 1.0 / tf.cast(size, tf.float64), "batches": tf.constant(1, tf.int64)}

    def summarise(self, sums: dict) -> dict:
        """`qt/accuracy` and `qt/chance` (1 / batch size), averaged over batches."""
        batches = max(int(sums.get("batches", 0)), 1)
        return {"qt/accuracy": float(sums.get("accuracy", 0.0)) / batches,
                "qt/chance": float(sums.get("chance", 0.0)) / batches}
