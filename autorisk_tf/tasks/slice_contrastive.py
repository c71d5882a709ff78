"""Random-slice contrastive learning: several random sub-sequences of a user are positives.

The CoLES objective: cut K random contiguous slices from every sequence, embed all of them
with the same encoder, and train each slice to find the other slices of its own user among
all slices of the batch (a multi-positive InfoNCE loss), so that the embedding keeps what is
stable about a user across any stretch of their history.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.event_preprocessor import PADDING_MASK
from autorisk_tf.tasks.base import StepContext, Task
from autorisk_tf.tasks.quick_thought import QuickThoughtHead, compact_events


@dataclasses.dataclass(frozen=True)
class SliceConfig:
    """How slices are cut (the `slice_contrastive:` section of a training config).

    Args:
        num_slices: int. Slices per sequence, K >= 2. Defaults to 4.
        min_fraction: float. Shortest slice as a share of the sequence. Defaults to 0.3.
        max_fraction: float. Longest slice as a share of the sequence. Defaults to 0.9.
        min_length: int. Fewest events per slice where the sequence has that many.
            Defaults to 2.
        projection_dim: int. Width of the projection before the similarity. Defaults to 128.
        temperature: float. Initial softmax temperature. Defaults to 0.1.
        learn_temperature: bool. Learn the temperature. Defaults to True.
    """

    num_slices: int = 4
    min_fraction: float = 0.3
    max_fraction: float = 0.9
    min_length: int = 2
    projection_dim: int = 128
    temperature: float = 0.1
    learn_temperature: bool = True

    def __post_init__(self):
        if self.num_slices < 2:
            raise ValueError(f"num_slices must be at least 2, got {self.num_slices}")
        if not 0.0 < self.min_fraction <= self.max_fraction <= 1.0:
            raise ValueError("slice fractions must satisfy 0 < min_fraction <= max_fraction "
                             f"<= 1, got {self.min_fraction}, {self.max_fraction}")
        if self.min_length < 1:
            raise ValueError(f"min_length must be at least 1, got {self.min_length}")


def sample_slices(ids: dict, config: SliceConfig, seed: tf.Tensor) -> dict:
    """Cuts K random contiguous slices from every sequence of a batch.

    Each slice's length is uniform in `[min_fraction, max_fraction]` of the sequence (at
    least `min_length` events, at most the whole sequence) and its start uniform over the
    positions where it fits.

    Args:
        ids: dict. Per-step id tensors [B, T, ...] and `padding_mask` (other entries are
            dropped).
        config: SliceConfig. Number and size of the slices.
        seed: int64 tensor [2]. Seed of the stateless random choices.

    Returns:
        Id dict of B*K rows, user-major (row `b * K + k` is slice k of sequence b), each
        slice left-aligned and padded to T.
    """
    mask = tf.cast(ids[PADDING_MASK], tf.bool)
    steps = {name: v for name, v in ids.items()
             if name == PADDING_MASK or (v.shape.rank or 0) >= 2}
    k = config.num_slices
    repeated = {name: tf.repeat(v, k, axis=0) for name, v in steps.items()}
    length = tf.repeat(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1), k)  # [B*K]
    lengths_f = tf.cast(length, tf.float32)
    u = tf.random.stateless_uniform(tf.shape(length), seed=seed)
    fraction = config.min_fraction + u * (config.max_fraction - config.min_fraction)
    size = tf.cast(tf.math.ceil(fraction * lengths_f), tf.int32)
    size = tf.minimum(tf.maximum(size, tf.minimum(config.min_length, length)), length)
    v = tf.random.stateless_uniform(tf.shape(length), seed=seed + tf.constant([0, 1], tf.int64))
    start = tf.cast(tf.floor(v * tf.cast(length - size + 1, tf.float32)), tf.int32)
    start = tf.minimum(start, length - size)
    position = tf.range(tf.shape(mask)[1])[None, :]
    keep = (position >= start[:, None]) & (position < (start + size)[:, None])
    return compact_events(repeated, keep & tf.cast(repeated[PADDING_MASK], tf.bool))


def multi_positive_nce(z: tf.Tensor, temperature: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Multi-positive InfoNCE over K views of B users, and nearest-view accuracy.

    For every view (anchor), each other view of the same user is a positive; the loss is
    `-log(exp(s_p / t) / sum_{a != anchor} exp(s_a / t))` averaged over the anchor's K - 1
    positives, then over the B*K anchors (the supervised-contrastive form).

    Args:
        z: float32 [B, K, E]. L2-normalised projected embeddings.
        temperature: float32 scalar. Softmax temperature.

    Returns:
        `(loss, accuracy)`: scalars; accuracy is the share of views whose most similar other
        view belongs to the same user.
    """
    shape = tf.shape(z)
    b, k = shape[0], shape[1]
    flat = tf.reshape(z, [b * k, -1])
    logits = tf.matmul(flat, flat, transpose_b=True) / temperature
    user = tf.repeat(tf.range(b), k)
    self_mask = tf.eye(b * k, dtype=tf.bool)
    same = tf.equal(user[:, None], user[None, :]) & ~self_mask
    logits = tf.where(self_mask, tf.cast(-1e9, logits.dtype), logits)
    log_prob = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
    positives = tf.cast(same, log_prob.dtype)
    per_anchor = -tf.reduce_sum(log_prob * positives, axis=1) / tf.cast(k - 1, log_prob.dtype)
    nearest = tf.argmax(logits, axis=1, output_type=tf.int32)
    accuracy = tf.reduce_mean(tf.cast(tf.gather(user, nearest) == user, tf.float32))
    return tf.reduce_mean(per_anchor), accuracy


@keras.saving.register_keras_serializable(package=PACKAGE)
class SliceContrastiveHead(QuickThoughtHead):
    """Projection, L2 norm and temperature for the slice task (a QuickThoughtHead's parts).

    Args:
        projection_dim: int. Projection width. Defaults to 128.
        temperature: float. Initial temperature. Defaults to 0.1.
        learn_temperature: bool. Learn it (as a log, clipped to [0.01, 1]).
            Defaults to True.

    Example:
    ```python
    head = SliceContrastiveHead()
    views = encoder(sample_slices(ids, SliceConfig(num_slices=4), seed))["embedding"]
    loss, accuracy = head.views_loss_and_accuracy(ops.reshape(views, (-1, 4, E)))
    ```

    References:
        Babaev et al., "CoLES: Contrastive Learning for Event Sequences with
        Self-Supervision" (SIGMOD 2022).
    """

    def views_loss_and_accuracy(self, views):
        """Multi-positive InfoNCE of [B, K, E] view embeddings (see `multi_positive_nce`)."""
        shape = ops.shape(views)
        z = self(ops.reshape(views, (-1, shape[-1])))
        z = ops.reshape(z, (shape[0], shape[1], -1))
        temperature = ops.exp(ops.clip(self.log_temperature, math.log(0.01), 0.0))
        return multi_positive_nce(z, temperature)


class SliceContrastiveTask(Task):
    """Random slices as a pre-training task (weight: `curriculum.slice_contrastive_*`).

    Enabled when `curriculum.slice_contrastive_start` is set. Like quick thought, its
    negatives are every slice of the global batch.
    """

    name = "slice_contrastive"
    config_class = SliceConfig
    seed_offset = 13
    progress_metrics = ("slice/accuracy",)

    def build_heads(self, dtype) -> dict:
        head = SliceContrastiveHead(self.settings.projection_dim, self.settings.temperature,
                                    self.settings.learn_temperature,
                                    name="slice_contrastive_head", dtype=dtype)
        head.build((None, self.encoder.embedding_dim))
        return {"slice_head": head}

    @property
    def enabled(self) -> bool:
        return self.config.curriculum.slice_contrastive_start is not None

    def weight_at(self, step: int) -> float:
        return self.config.curriculum.slice_contrastive_weight_at(step)

    def make_inputs(self, ids: dict, seed: tf.Tensor) -> dict:
        return {"slices": sample_slices(ids, self.settings, seed)}

    def loss_and_metrics(self, context: StepContext) -> tuple:
        views = context.encoded("slices")["embedding"]
        views = tf.reshape(views, [-1, self.settings.num_slices, tf.shape(views)[-1]])
        loss, accuracy = self.heads["slice_head"].views_loss_and_accuracy(
            context.gathered(views))  # [B, K, E] of the global batch
        share = loss / context.replicas
        return share, {"slice/loss": share, "slice/accuracy": accuracy / context.replicas}
