"""The latest state of every number per category: the `state` pooling of the encoder."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.data.artifacts import MISSING_ID, NUM_RESERVED_IDS
from autorisk_tf.layers.event_preprocessor import PADDING_MASK, value_input
from autorisk_tf.layers.field_embedding import embedding_specs

STATISTICS = ("count", "first", "last", "min", "max", "mean")


def state_fields(features: list[dict]) -> list[tuple[dict, dict | None]]:
    """The `(numeric spec, category spec or None)` pairs that `NumericState` summarises.

    Every `continuous` numeric field, with the categorical field it is bucketed by (its
    `bucket_by`, when the features hold that field) or None for one summary of all its
    values.
    """
    by_name = {spec["name"]: spec for spec in features}
    return [(spec, by_name.get(spec.get("bucket_by", "")))
            for spec in features if spec["kind"] == "numeric" and spec.get("continuous")]


def num_categories(category: dict | None) -> int:
    """Categories summarised apart: the vocabulary ids of the field, or 1 without one."""
    return 1 if category is None else max(category["vocab_size"] - NUM_RESERVED_IDS, 0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NumericState(keras.layers.Layer):
    """Count, first, last, min, max and mean of each number, per category of its field.

    For every `continuous` numeric field (the standardised value `<name>/value` that
    `EventPreprocessor` writes) and, when the field has a `bucket_by` categorical field,
    for each id of that field's vocabulary apart: the numeric counterpart of the `ids`
    pooling, and what a hand-made pool of first/last/min/max/mean/count per variable
    holds, read by the model itself (the latest heart rate, the last amount of each event
    type). Values are the standardised numbers (per category, after the log where the
    field has one, clipped to +-5), so a category without a value gets 0 in every
    statistic (the training mean) and `count` tells it apart: `log1p` of the number of
    known values. Padded steps, missing values and reserved category ids (missing,
    unknown, mask) count for nothing, so padding does not change the result. No weights.

    Memory is O(B x T x C) for C categories: meant for event-type fields with up to a few
    hundred values, not item ids.

    Args:
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`, `continuous`,
            `bucket_by`); the `state_fields` of them are summarised.

    Returns (from `call`):
        float tensor [B, `output_dim`]: per field, `len(STATISTICS)` blocks of one column
        per category (all statistics of category 0, then of category 1, ...), fields in
        schema order; width 0 for a schema without a continuous field.

    Example:
    ```python
    features = [{"name": "test", "kind": "categorical", "vocab_size": 6},
                {"name": "value", "kind": "numeric", "vocab_size": 8, "continuous": True,
                 "bucket_by": "test"}]
    state = NumericState(features)
    y = state({"test": ops.array([[4, 5, 4]]), "value": ops.array([[5, 6, 7]]),
               "value/value": ops.array([[0.5, -1.0, 2.0]]),
               "padding_mask": ops.array([[True, True, True]])})
    # [1, 12]: test 4 has count log(3), first 0.5, last 2.0, min 0.5, max 2.0, mean 1.25
    ```
    """

    def __init__(self, features: list[dict], **kwargs):
        super().__init__(**kwargs)
        self.features = embedding_specs(features)
        self.supports_masking = True

    @property
    def output_dim(self) -> int:
        """Width of the output: statistics times categories, summed over the fields."""
        return sum(len(STATISTICS) * num_categories(category)
                   for _, category in state_fields(self.features))

    def build(self, input_shape=None):
        self.built = True

    def _summary(self, known, z):
        """The statistics of `z` [B, T] over the steps where `known` [B, T, C] is true."""
        dtype = z.dtype
        weights = ops.cast(known, dtype)
        count = ops.sum(weights, axis=1)  # [B, C]
        mean = ops.einsum("btc,bt->bc", weights, z) / ops.maximum(count, 1.0)
        steps = ops.shape(z)[1]
        position = ops.cast(ops.arange(steps) + 1, dtype)[None, :, None]
        latest = ops.max(weights * position, axis=1, keepdims=True)
        earliest = ops.max(weights * (ops.cast(steps + 1, dtype) - position), axis=1,
                           keepdims=True)
        at_last = ops.cast(known & (weights * position == latest), dtype)
        at_first = ops.cast(known & (weights * (ops.cast(steps + 1, dtype) - position)
                                     == earliest), dtype)
        last = ops.einsum("btc,bt->bc", at_last, z)
        first = ops.einsum("btc,bt->bc", at_first, z)
        any_known = count > 0
        zs = z[:, :, None]
        low = ops.min(ops.where(known, zs, 1e9), axis=1)
        high = ops.max(ops.where(known, zs, -1e9), axis=1)
        zero = ops.zeros_like(count)
        stats = {"count": ops.log1p(count), "first": first, "last": last,
                 "min": ops.where(any_known, low, zero), "max": ops.where(any_known, high, zero),
                 "mean": mean}
        return ops.concatenate([stats[name] for name in STATISTICS], axis=-1)

    def call(self, inputs):
        pairs = state_fields(self.features)
        if not pairs:
            any_input = next(iter(inputs.values()))
            return ops.zeros((ops.shape(any_input)[0], 0), self.compute_dtype)
        out = []
        for spec, category in pairs:
            ids = ops.cast(inputs[spec["name"]], "int32")
            z = ops.cast(inputs[value_input(spec["name"])], "float32")
            known = ids > MISSING_ID  # padding (0) and missing (1) count for nothing
            if PADDING_MASK in inputs:
                known = known & ops.cast(inputs[PADDING_MASK], "bool")
            if category is None:
                known = known[:, :, None]
            else:
                cats = ops.cast(inputs[category["name"]], "int32") - NUM_RESERVED_IDS
                # Reserved ids become -1, whose one-hot row is all zeros.
                one_hot = ops.one_hot(ops.where(cats >= 0, cats, -1), num_categories(category))
                known = ops.cast(one_hot, "bool") & known[:, :, None]
            out.append(self._summary(known, z))
        out = out[0] if len(out) == 1 else ops.concatenate(out, axis=-1)
        return ops.cast(out, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features]})
        return config
