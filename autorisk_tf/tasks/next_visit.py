"""Next-visit prediction: embed a user's history up to a visit, predict that visit's event.

A visit starts at an event whose time since the previous event is at least a second (every
event, in a schema without the time-delta feature). For each sequence one visit is drawn
at random; the encoder embeds the events before it, and a head on the sequence embedding
predicts the fields of the visit's first event: above all the gap since the history's last
event (its time-delta bucket), and its hour, weekday and age, items and amounts. A
repurchase or churn label asks the same question about the visit after the data ends, so
this is the pre-training signal that hand-made recency and frequency features only
approximate.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from autorisk_tf.contract import PACKAGE
from autorisk_tf.data.artifacts import NUM_RESERVED_IDS
from autorisk_tf.layers.event_preprocessor import PADDING_MASK, TIME_DELTA
from autorisk_tf.layers.field_embedding import vocabulary_ids
from autorisk_tf.tasks.base import StepContext, Task
from autorisk_tf.tasks.masked_event import TARGET_KINDS, MaskedEventHead
from autorisk_tf.tasks.quick_thought import compact_events

# The time-delta id of a gap of 0 seconds (bucket floor(log2(1 + 0)) = 0).
_SAME_TIME_ID = NUM_RESERVED_IDS


@dataclasses.dataclass(frozen=True)
class NextVisitConfig:
    """Which visits are predicted (the `next_visit:` section of a training config).

    Args:
        min_events: int. Fewest events in the embedded history. Defaults to 1.
        predict_text: bool. Also predict the bag of the next event's text tokens.
            Defaults to True.
    """

    min_events: int = 1
    predict_text: bool = True

    def __post_init__(self):
        if self.min_events < 1:
            raise ValueError(f"min_events must be at least 1, got {self.min_events}")


def cut_histories(ids: dict, features: list[dict], config: NextVisitConfig,
                  seed: tf.Tensor) -> tuple[dict, dict]:
    """Draws one visit per sequence: the history before it and its first event's fields.

    Args:
        ids: dict. A batch from the input pipeline (ids [B, T], text ids [B, T, L],
            `padding_mask`).
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`).
        config: NextVisitConfig. The shortest history.
        seed: int64 tensor [2]. Seed of the stateless random choice.

    Returns:
        `(history, targets)`: `history` is `ids` with the events from the drawn visit on
        removed (the whole sequence where no visit qualifies); `targets` holds the drawn
        event's ids of every categorical, numeric and time feature (and text feature with
        `predict_text`) as [B, 1] ([B, 1, L] for text), and `masked_weights` [B, 1]: 1
        where a visit was drawn, so `MaskedEventHead.losses_and_metrics` reads them as one
        masked event per row.
    """
    mask = tf.cast(ids[PADDING_MASK], tf.bool)
    position = tf.range(tf.shape(mask)[1])[None, :]
    eligible = mask & (position >= config.min_events)
    if TIME_DELTA in ids:
        eligible &= ids[TIME_DELTA] > _SAME_TIME_ID
    score = tf.random.stateless_uniform(tf.shape(mask), seed=seed)
    cut = tf.argmax(tf.where(eligible, score, -1.0), axis=1, output_type=tf.int32)
    drawn = tf.reduce_any(eligible, axis=1)
    length = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    end = tf.where(drawn, cut, length)
    steps = {name: v for name, v in ids.items()
             if name == PADDING_MASK or (v.shape.rank or 0) >= 2}
    history = compact_events(steps, (position < end[:, None]) & mask)
    targets = {"masked_weights": tf.cast(drawn, tf.float32)[:, None]}
    for spec in features:
        name, kind = spec["name"], spec["kind"]
        if kind in (*TARGET_KINDS, "time") or (kind == "text" and config.predict_text):
            targets[name] = vocabulary_ids(
                spec, tf.gather(ids[name], cut[:, None], axis=1, batch_dims=1))
    return history, targets


@keras.saving.register_keras_serializable(package=PACKAGE)
class NextVisitHead(MaskedEventHead):
    """Predicts the next visit's first event from the embedding of the history before it.

    A MaskedEventHead (one classifier per field, time features included) that reads the
    sequence embedding instead of per-step states; its metrics are named `next/...`.

    Args:
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`).
        predict_text: bool. Add the text bag-of-tokens heads. Defaults to True.

    Example:
    ```python
    head = NextVisitHead(features)
    history, targets = cut_histories(ids, features, NextVisitConfig(), seed)
    loss, metrics = head.next_loss_and_metrics(encoder(history)["embedding"], targets, rows)
    ```
    """

    def __init__(self, features: list[dict], predict_text: bool = True, **kwargs):
        kwargs.pop("predict_time", None)
        super().__init__(features, predict_text=predict_text, predict_time=True, **kwargs)

    def next_loss_and_metrics(self, embedding, targets, num_rows):
        """Loss and accuracies of the drawn visits.

        Args:
            embedding: float [B, E]. Sequence embeddings of the histories.
            targets: dict. From `cut_histories`.
            num_rows: float scalar. Rows with a drawn visit in the global batch (the loss
                denominator).

        Returns:
            `(loss, metrics)`: the summed per-field losses and `next/<field>/...` metrics.
        """
        loss, metrics = self.losses_and_metrics(embedding[:, None, :], targets, num_rows)
        return loss, {"next/" + key.removeprefix("mlm/"): value
                      for key, value in metrics.items()}



class NextVisitTask(Task):
    """Next-visit prediction as a pre-training task (weight: `curriculum.next_visit_weight`).

    Enabled, and its head built, only with a weight above 0: one more encoder pass per step.
    """

    name = "next_visit"
    config_class = NextVisitConfig
    seed_offset = 17

    def build_heads(self, dtype) -> dict:
        if not self.enabled:
            return {}
        head = NextVisitHead(self.feature_specs, self.settings.predict_text,
                             name="next_visit_head", dtype=dtype)
        head.build((None, self.encoder.embedding_dim))
        return {"next_head": head}

    @property
    def enabled(self) -> bool:
        return self.config.curriculum.next_visit_weight > 0

    def weight_at(self, step: int) -> float:
        return self.config.curriculum.next_visit_weight

    def make_inputs(self, ids: dict, seed: tf.Tensor) -> dict:
        history, targets = cut_histories(ids, self.feature_specs, self.settings, seed)
        rows = tf.reduce_sum(targets["masked_weights"])
        return {"history": history, "next_targets": targets,
                "num_histories": tf.fill(tf.shape(targets["masked_weights"])[:1], rows)}

    def loss_and_metrics(self, context: StepContext) -> tuple:
        example = context.example
        loss, metrics = self.heads["next_head"].next_loss_and_metrics(
            context.encoded("history")["embedding"], example["next_targets"],
            example["num_histories"][0])
        metrics["next/loss"] = loss
        return loss, metrics
