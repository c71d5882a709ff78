"""Masked event modelling: hide some events, predict their field values from the context."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.data.artifacts import MASK_ID, NUM_RESERVED_IDS, PAD_ID
from autorisk_tf.layers.event_preprocessor import PADDING_MASK, value_input
from autorisk_tf.layers.field_embedding import embedding_specs, per_token, vocabulary_ids
from autorisk_tf.tasks.base import StepContext, Task

TARGET_KINDS = ("categorical", "numeric")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """Which events are hidden and how (the `masked_event:` section of a training config).

    Args:
        rate: float. Share of real events selected. Defaults to 0.15.
        mask_token: float. Share of selected events whose fields all become the mask id.
            Defaults to 0.8.
        random_token: float. Share given random ids; the rest keep their values.
            Defaults to 0.1.
        mask_time_features: bool. Hide the time features of selected events too, and
            predict them (the gap since the previous event, hour, weekday, age): the model
            must learn a sequence's tempo. Defaults to False (the model knows when
            something happened, not what).
        predict_text: bool. Also predict the bag of a text field's tokens. Defaults to True.
    """

    rate: float = 0.15
    mask_token: float = 0.8
    random_token: float = 0.1
    mask_time_features: bool = False
    predict_text: bool = True

    def __post_init__(self):
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"masking rate must be in (0, 1), got {self.rate}")
        if self.mask_token < 0 or self.random_token < 0 or \
                self.mask_token + self.random_token > 1.0:
            raise ValueError("mask_token and random_token must be >= 0 and sum to <= 1")


def _uniform(shape, seed, offset):
    return tf.random.stateless_uniform(shape, seed=seed + tf.constant([0, offset], tf.int64))


def mask_events(ids: dict, features: list[dict], config: MaskingConfig, seed: tf.Tensor,
                ) -> tuple[dict, dict]:
    """Selects events to hide and builds the model inputs and the targets.

    Args:
        ids: dict. A batch from the input pipeline (ids [B, T], text ids [B, T, L],
            `padding_mask`).
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`).
        config: MaskingConfig. Rates and options.
        seed: int64 tensor [2]. Seed of the stateless random choices.

    Returns:
        `(inputs, targets)`: `inputs` is `ids` with the selected events hidden (and the
        values of continuous fields zeroed there); `targets`
        holds the original ids of every categorical and numeric field (and of text fields
        when predicted) and `masked_weights`, float [B, T], 1 at selected events.
    """
    mask = tf.cast(ids[PADDING_MASK], tf.bool)
    shape = tf.shape(mask)
    selected = (_uniform(shape, seed, 0) < config.rate) & mask
    action = _uniform(shape, seed, 1)
    use_mask = selected & (action < config.mask_token)
    use_random = selected & ~use_mask & (action < config.mask_token + config.random_token)
    inputs = hide_events(ids, features, use_mask, config.mask_time_features)
    targets = {"masked_weights": tf.cast(selected, tf.float32)}
    for i, spec in enumerate(features):
        name, kind = spec["name"], spec["kind"]
        x = ids[name]
        if kind in TARGET_KINDS or (kind == "text" and config.predict_text) or (
                kind == "time" and config.mask_time_features):
            targets[name] = vocabulary_ids(spec, x)
        if kind == "time" and not config.mask_time_features:
            continue
        low = min(NUM_RESERVED_IDS, spec["vocab_size"] - 1)
        random_ids = tf.random.stateless_uniform(
            tf.shape(x), seed=seed + tf.constant([1, i], tf.int64), minval=low,
            maxval=spec["vocab_size"], dtype=tf.int32)
        replace = use_random[..., None] & (x != PAD_ID) if per_token(spec) else use_random
        inputs[name] = tf.where(replace, random_ids, inputs[name])
        if spec.get("continuous"):  # the number would give its hidden bucket away
            inputs[value_input(name)] = tf.where(selected, 0.0, ids[value_input(name)])
    return inputs, targets


def hide_events(ids: dict, features: list[dict], hidden: tf.Tensor,
                mask_time_features: bool = False) -> dict:
    """The ids with some events made the mask event: what masked event modelling hides.

    Every field of a hidden event becomes the mask id (a text or multi-valued field: one
    mask id, then padding), its time features too with `mask_time_features`, and its
    continuous numbers 0. Reason codes (`autorisk_tf.explain`) hide every event to get
    their baseline.

    Args:
        ids: dict. A batch from the input pipeline (ids, `<name>/value` numbers,
            `padding_mask`).
        features: list of dict. Feature specs (`name`, `kind`).
        hidden: bool tensor [B, T]. The events to hide.
        mask_time_features: bool. Hide time features too. Defaults to False.

    Returns:
        A new dict of the same tensors, with the hidden events changed.
    """
    inputs = dict(ids)
    for spec in features:
        name, kind = spec["name"], spec["kind"]
        if kind == "time" and not mask_time_features:
            continue
        x = ids[name]
        if per_token(spec):
            first = tf.range(tf.shape(x)[-1]) == 0
            inputs[name] = tf.where(hidden[..., None], tf.where(first, MASK_ID, PAD_ID), x)
        else:
            inputs[name] = tf.where(hidden, MASK_ID, x)
        if spec.get("continuous"):
            inputs[value_input(name)] = tf.where(hidden, 0.0, ids[value_input(name)])
    return inputs


RECALL_K = 5


def id_bag(ids: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """Multi-hot [M, V] of the ids [M, L] of text tokens or multi-valued categorical values.

    The padding id is never set; missing and out-of-vocabulary ids are.
    """
    bag = tf.reduce_max(tf.one_hot(ids, vocab_size), axis=1)
    return tf.concat([tf.zeros_like(bag[:, :1]), bag[:, 1:]], axis=1)


def recall_at_k(logits: tf.Tensor, bag: tf.Tensor, k: int = RECALL_K) -> dict:
    """Per-event recall@k of a multi-valued field, next to a most-frequent-values guess.

    The vocabulary is ordered by training frequency, so the baseline guesses ids 4 to 4+k-1.

    Args:
        logits: float [M, V]. Scores of every id.
        bag: float [M, V]. 1 at the event's ids (reserved ids are never true values).
        k: int. Guesses per event.

    Returns:
        `{"recall@k": [M], "recall@k_frequency": [M]}`: true values among the guesses over
        the event's true values (0 for an event without any).
    """
    bag = bag * tf.cast(tf.range(tf.shape(bag)[-1]) >= NUM_RESERVED_IDS, bag.dtype)
    true = tf.reduce_sum(bag, axis=-1)
    scores = tf.where(tf.range(tf.shape(logits)[-1]) >= NUM_RESERVED_IDS, logits, -1e9)
    top = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(scores)[-1])).indices
    hits = tf.reduce_sum(tf.gather(bag, top, batch_dims=1), axis=-1)
    frequent = tf.reduce_sum(bag[:, NUM_RESERVED_IDS:NUM_RESERVED_IDS + k], axis=-1)
    safe = tf.maximum(true, 1.0)
    return {f"recall@{k}": hits / safe, f"recall@{k}_frequency": frequent / safe}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedEventHead(keras.layers.Layer):
    """Predicts the hidden fields of masked events from the encoder's per-step outputs.

    One softmax classifier per categorical and numeric field (over its ids), optionally
    per time feature, and, for text fields, a sigmoid classifier per token (the bag of the
    event's tokens). Losses are averaged over the selected events of the whole global batch.

    Args:
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`).
        predict_text: bool. Add the text bag-of-tokens heads. Defaults to True.
        predict_time: bool. Add time feature heads (with `mask_time_features`).
            Defaults to False.

    Example:
    ```python
    head = MaskedEventHead([{"name": "event_type", "kind": "categorical", "vocab_size": 9}])
    losses, metrics = head.losses_and_metrics(sequence, targets, num_masked)
    ```
    """

    def __init__(self, features: list[dict], predict_text: bool = True,
                 predict_time: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.features = embedding_specs(features)
        self.predict_text = predict_text
        self.predict_time = predict_time
        self.targets = [spec for spec in self.features if spec["kind"] in TARGET_KINDS
                        or (spec["kind"] == "text" and predict_text)
                        or (spec["kind"] == "time" and predict_time)]
        self.classifiers = {spec["name"]: keras.layers.Dense(
            spec["vocab_size"], name=f"predict_{spec['name']}", dtype=self.dtype_policy)
            for spec in self.targets}

    def build(self, input_shape):
        for layer in self.classifiers.values():
            layer.build(input_shape)

    def call(self, sequence):
        return {name: layer(sequence) for name, layer in self.classifiers.items()}

    def losses_and_metrics(self, sequence, targets, num_masked):
        """Losses and accuracies at the selected events.

        Args:
            sequence: float [B, T, D]. Encoder outputs on the masked inputs.
            targets: dict. From `mask_events`.
            num_masked: float scalar. Selected events in the global batch (the loss
                denominator, so replicas' gradients add up to the global mean).

        Returns:
            `(total_loss, metrics)`: the summed per-field losses, and a dict of
            `mlm/<field>/loss` and `mlm/<field>/accuracy` (accuracy as masked-sum numerators
            over `num_masked`; text fields report the loss only, multi-valued fields
            `recall@5` and `recall@5_frequency`, the most-frequent-values baseline).
        """
        selected = targets["masked_weights"] > 0
        hidden = tf.boolean_mask(sequence, selected)  # [M, D]
        denominator = tf.maximum(tf.cast(num_masked, tf.float32), 1.0)
        total, metrics = 0.0, {}
        for spec in self.targets:
            name = spec["name"]
            logits = ops.cast(self.classifiers[name](hidden), "float32")
            target = tf.boolean_mask(targets[name], selected)
            if per_token(spec):
                bag = id_bag(target, spec["vocab_size"])
                loss = tf.reduce_sum(tf.reduce_mean(
                    tf.nn.sigmoid_cross_entropy_with_logits(bag, logits), axis=-1))
                if spec["kind"] == "categorical":
                    for key, hits in recall_at_k(logits, bag).items():
                        metrics[f"mlm/{name}/{key}"] = tf.reduce_sum(hits) / denominator
            else:
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    target, logits))
                correct = tf.cast(tf.argmax(logits, -1, output_type=target.dtype) == target,
                                  tf.float32)
                metrics[f"mlm/{name}/accuracy"] = tf.reduce_sum(correct) / denominator
            metrics[f"mlm/{name}/loss"] = loss / denominator
            total += loss / denominator
        return total, metrics

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features],
                       "predict_text": self.predict_text,
                       "predict_time": self.predict_time})
        return config


class MaskedEventTask(Task):
    """Masked event modelling as a pre-training task (weight: `curriculum.masked_event_weight`).

    Its `masked` inputs are the pass that bag of ids reads too, so the task is always
    enabled; with weight 0 it costs the masking only.
    """

    name = "masked_event"
    config_class = MaskingConfig
    progress_metrics = ("mlm/loss",)

    def build_heads(self, dtype) -> dict:
        head = MaskedEventHead(self.feature_specs, self.settings.predict_text,
                               predict_time=self.settings.mask_time_features,
                               name="masked_event_head", dtype=dtype)
        head.build((None, self.config.model.width))
        return {"mlm_head": head}

    def weight_at(self, step: int) -> float:
        return self.config.curriculum.masked_event_weight

    def make_inputs(self, ids: dict, seed: tf.Tensor) -> dict:
        masked, targets = mask_events(ids, self.feature_specs, self.settings, seed)
        count = tf.reduce_sum(targets["masked_weights"])
        return {"masked": masked, "targets": targets,
                "num_masked": tf.fill(tf.shape(targets["masked_weights"])[:1], count)}

    def loss_and_metrics(self, context: StepContext) -> tuple:
        example = context.example
        loss, metrics = self.heads["mlm_head"].losses_and_metrics(
            context.encoded("masked")["sequence"], example["targets"],
            example["num_masked"][0])
        metrics["mlm/loss"] = loss
        return loss, metrics

    def evaluation(self, example: dict) -> dict:
        """Hits, target counts and recall@k numerators at the masked events of a batch."""
        head = self.heads["mlm_head"]
        selected = example["targets"]["masked_weights"] > 0
        hidden = tf.boolean_mask(self.encoder(example["masked"], training=False)["sequence"],
                                 selected)
        sums = {"events": tf.reduce_sum(tf.cast(selected, tf.float32))}
        for spec in head.targets:
            name, size = spec["name"], spec["vocab_size"]
            target = tf.boolean_mask(example["targets"][name], selected)
            scores = head.classifiers[name](hidden)
            if not per_token(spec):
                predicted = tf.argmax(scores, -1, output_type=target.dtype)
                sums[f"correct/{name}"] = tf.reduce_sum(tf.cast(predicted == target, tf.int64))
                sums[f"counts/{name}"] = tf.math.bincount(
                    tf.cast(target, tf.int32), minlength=size, maxlength=size, dtype=tf.int64)
            elif spec["kind"] == "categorical":
                for key, hits in recall_at_k(scores, id_bag(target, size)).items():
                    sums[f"mlm/{name}/{key}"] = tf.reduce_sum(hits)
        return sums

    def summarise(self, sums: dict) -> dict:
        """Masked-event accuracy next to the majority class, and recall@k.

        Returns:
            `events_masked`, `mlm/<field>/accuracy` and `mlm/<field>/majority` (the share
            of the most frequent target at the same events), and each multi-valued
            field's `recall@k` numerators over the events.
        """
        total = max(int(sums.get("events", 0)), 1)
        result = {"events_masked": total}
        result.update({key: value / total for key, value in sums.items()
                       if key.startswith("mlm/")})
        for spec in self.heads["mlm_head"].targets:
            name = spec["name"]
            if not per_token(spec):
                result[f"mlm/{name}/accuracy"] = int(sums.get(f"correct/{name}", 0)) / total
                result[f"mlm/{name}/majority"] = float(
                    np.max(sums.get(f"counts/{name}", 0))) / total
        return result
