"""Raw events to ids: the one place where a raw field value becomes a model input id.

Training (inside tf.data), export and serving all call this layer, so there is no train /
serve skew. It is built from the preprocessing artifacts and keeps them in its config, so a
saved model needs no `artifacts/` folder.

Id layout of every output (see `autorisk_tf.data.artifacts`): 0 padding, 1 missing, 2 out of
vocabulary, 3 mask, then the vocabulary, the numeric buckets or the time buckets.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from autorisk_tf.contract import PACKAGE
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.artifacts import MISSING_ID, NUM_RESERVED_IDS, OOV_ID, PAD_ID, Artifacts
from autorisk_tf.data.schema import RESERVED_NAMES, TIME_FEATURE_NAMES

TIME_DELTA, TIME_HOUR, TIME_DAY_OF_WEEK, TIME_AGE = TIME_FEATURE_NAMES
MS_PER_HOUR = 3_600_000
PADDING_MASK = RESERVED_NAMES[-1]
VALUE_SUFFIX = "/value"  # field names have no "/", so `amount/value` names no field
CLIP = 5.0


def value_input(name: str) -> str:
    """The model input holding the standardised number of a `continuous` field."""
    return name + VALUE_SUFFIX


def model_input_names(features: list[dict]) -> set[str]:
    """Every entry of `EventPreprocessor`'s output for these feature specs."""
    return ({spec["name"] for spec in features} | {PADDING_MASK}
            | {value_input(spec["name"]) for spec in features if spec.get("continuous")})


def feature_specs_from_artifacts(artifacts: Artifacts) -> list[dict]:
    """Describes every id feature the schema and artifacts define.

    Args:
        artifacts: Artifacts. Schema, vocabularies and boundaries of a preprocessing run.

    Returns:
        One dict per feature, in schema order then time features: `name`, `kind`
        (`categorical`, `numeric`, `text` or `time`), `vocab_size` (reserved ids included;
        a categorical field's `hash_buckets` hashed ids, where it has them, come after)
        and the kind's own entries (`vocabulary`, `boundaries`, `tokenizer` and
        `max_tokens`, `buckets`, and `reference_ms` for the age feature).
    """
    specs = []
    for field in artifacts.schema.fields:
        spec = {"name": field.name, "kind": field.kind}
        if field.kind == "categorical":
            spec["vocabulary"] = artifacts.vocabulary(field.name)
            spec["vocab_size"] = NUM_RESERVED_IDS + len(spec["vocabulary"])
            if field.hash_buckets:
                spec["hash_buckets"] = field.hash_buckets
            if field.separator:
                spec.update(multi=True, separator=field.separator, max_values=field.max_values)
        elif field.kind == "numeric":
            spec["boundaries"] = [float(b) for b in artifacts.boundaries[field.name]]
            most = len(spec["boundaries"])
            if field.bucket_by:
                own = artifacts.category_boundaries.get(field.name, {})
                spec["bucket_by"] = field.bucket_by
                spec["categories"] = sorted(own)
                spec["category_boundaries"] = [[float(b) for b in own[c]]
                                               for c in spec["categories"]]
                most = max([most] + [len(b) for b in spec["category_boundaries"]])
            spec["vocab_size"] = NUM_RESERVED_IDS + most + 1
            if field.continuous:
                scales = artifacts.numeric_scales[field.name]
                spec.update(continuous=True, log=field.log, scale=list(
                    map(float, (scales["mean"], scales["std"]))))
                if field.bucket_by:
                    spec["category_scales"] = [list(map(float, scales["categories"][c]))
                                               for c in spec["categories"]]
        else:
            spec["vocabulary"] = artifacts.text_vocabulary(field.name)
            spec["vocab_size"] = NUM_RESERVED_IDS + len(spec["vocabulary"])
            spec["tokenizer"] = field.tokenizer
            spec["max_tokens"] = field.max_tokens
        specs.append(spec)
    time = artifacts.schema.time_features
    buckets = [(TIME_DELTA, time.delta_buckets), (TIME_HOUR, 24 if time.hour else 0),
               (TIME_DAY_OF_WEEK, 7 if time.day_of_week else 0)]
    for name, count in buckets:
        if count:
            specs.append({"name": name, "kind": "time", "buckets": count,
                          "vocab_size": NUM_RESERVED_IDS + count})
    if time.age_buckets:
        if artifacts.reference_time_ms is None:
            raise ValueError("time_features.age_buckets needs a reference time: rerun "
                             "beam.preprocess (it records the latest event, or --as_of)")
        specs.append({"name": TIME_AGE, "kind": "time", "buckets": time.age_buckets,
                      "vocab_size": NUM_RESERVED_IDS + time.age_buckets,
                      "reference_ms": int(artifacts.reference_time_ms)})
    return specs


def _floor_log2(x: tf.Tensor) -> tf.Tensor:
    """Exact `floor(log2(x))` for x >= 1 (float log alone misses some powers of two)."""
    n = tf.floor(x)
    guess = tf.cast(tf.floor(tf.math.log(n) / tf.math.log(2.0)), tf.int32)
    guess = tf.where(tf.pow(2.0, tf.cast(guess + 1, tf.float32)) <= n, guess + 1, guess)
    return tf.where(tf.pow(2.0, tf.cast(guess, tf.float32)) > n, guess - 1, guess)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EventPreprocessor(keras.layers.Layer):
    """Maps parsed raw events (as `autorisk_tf.data.reader.parse_batch` returns) to ids.

    - categorical: vocabulary lookup; "" is missing, unknown values are OOV, or with
      `hash_buckets` N one of the N ids after the vocabulary's (`vocab_size + h`, h the
      value's FarmHash fingerprint modulo N: the same id in training and serving);
    - numeric: bucket `i` holds `boundaries[i-1] <= x < boundaries[i]` (raw units, compared
      in float32, the precision the values are stored in); NaN is missing; with `bucket_by`
      the boundaries are those of the event's category, or the global ones for a category
      without its own (rare, unknown or missing);
    - text: `tf.strings.unicode_split` (char) or `tf.strings.split` (whitespace), exactly as
      `artifacts.tokenize`; the first `max_tokens` tokens; an empty text is one missing token;
    - multi-valued categorical (`separator`): the non-empty values of the split cell, as
      `artifacts.split_values`, looked up like tokens: ids [B, T, max_values], the first
      `max_values` values, one missing id for a cell without any;
    - time: seconds since the previous event on log2 buckets `floor(log2(1 + s))` (the first
      event is missing), hour of day, day of week, and the age in hours before the
      reference time on half-log2 buckets `floor(2 * log2(1 + h))` (0 for later events);
    - continuous numeric (`continuous`): also `<name>/value`, the number standardised with
      the training mean and std (of its category with `bucket_by`, of `sign(x) log1p(|x|)`
      with `log`), clipped to +-5; 0 where missing, which the id marks as missing.

    Steps past each example's `length` get the padding id 0 in every output (value 0).

    Args:
        features: list of dict. Feature specs from `feature_specs_from_artifacts`.

    Returns (from `call`):
        Dict: each feature name to int32 ids [B, T] ([B, T, max_tokens] for text,
        [B, T, max_values] for multi-valued categorical fields), float32
        `<name>/value` [B, T] for continuous fields, and `padding_mask` bool [B, T].

    Example:
    ```python
    pre = EventPreprocessor.from_artifacts(Artifacts.load("out/artifacts"))
    ids = pre(reader.parse_batch(serialized, schema))
    ```
    """

    def __init__(self, features: list[dict], **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.features = [dict(spec) for spec in features]
        self._lookups = {}
        self._tables = {}
        self._scales = {}
        self._hashed = {spec["name"]: (spec["vocab_size"], spec["hash_buckets"])
                        for spec in self.features if spec.get("hash_buckets")}
        for spec in self.features:
            if spec["kind"] in ("categorical", "text"):
                # StringLookup gives 0 to OOV and i+1 to vocabulary[i]; shifted in call.
                self._lookups[spec["name"]] = keras.layers.StringLookup(
                    vocabulary=spec["vocabulary"] or [""], num_oov_indices=1,
                    name=f"lookup_{spec['name']}")
            elif spec.get("bucket_by"):
                # Row 0 of the table holds the global boundaries (OOV of the lookup).
                self._lookups[spec["name"]] = keras.layers.StringLookup(
                    vocabulary=spec["categories"] or [""], num_oov_indices=1,
                    name=f"categories_{spec['name']}")
                # Without own categories the lookup's one entry is "": global boundaries too.
                rows = [spec["boundaries"]] + (spec["category_boundaries"]
                                               or [spec["boundaries"]])
                width = max(len(row) for row in rows)
                self._tables[spec["name"]] = np.array(
                    [row + [np.inf] * (width - len(row)) for row in rows], np.float32)
            if spec.get("continuous"):
                scales = [spec["scale"]] + (spec.get("category_scales") or [spec["scale"]]
                                            if spec.get("bucket_by") else [])
                self._scales[spec["name"]] = np.array(scales, np.float32)

    @classmethod
    def from_artifacts(cls, artifacts: Artifacts, **kwargs) -> EventPreprocessor:
        """Builds the layer from the artifacts of a preprocessing run."""
        return cls(feature_specs_from_artifacts(artifacts), **kwargs)

    def build(self, input_shape=None):
        for lookup in self._lookups.values():
            lookup.build(None)

    def _lookup(self, name: str, values: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(self._lookups[name](values), tf.int32)
        unknown = OOV_ID
        if name in self._hashed:
            vocab_size, buckets = self._hashed[name]
            unknown = vocab_size + tf.cast(tf.strings.to_hash_bucket_fast(values, buckets),
                                           tf.int32)
        ids = tf.where(ids == 0, unknown, ids + (NUM_RESERVED_IDS - 1))
        return tf.where(values == "", MISSING_ID, ids)

    def _category_buckets(self, spec: dict, x: tf.Tensor, categories: tf.Tensor) -> tf.Tensor:
        """Buckets of `x` on the boundaries of each event's category (`bucket_by`)."""
        rows = tf.gather(tf.constant(self._tables[spec["name"]]),
                         self._lookups[spec["name"]](categories))
        # Padding boundaries are +inf, never <= x, so the count is the bucket.
        return tf.reduce_sum(tf.cast(rows <= x[..., None], tf.int32), axis=-1)

    def _standardised(self, spec: dict, x: tf.Tensor, categories: tf.Tensor | None,
                      ) -> tf.Tensor:
        """The number of a `continuous` field, standardised and clipped; 0 where NaN."""
        known = ~tf.math.is_nan(x)
        x = tf.where(known, x, 0.0)
        if spec["log"]:
            x = tf.sign(x) * tf.math.log1p(tf.abs(x))
        table = tf.constant(self._scales[spec["name"]])
        scale = table[0] if categories is None else tf.gather(
            table, self._lookups[spec["name"]](categories))
        z = tf.clip_by_value((x - scale[..., 0]) / scale[..., 1], -CLIP, CLIP)
        return tf.where(known, z, 0.0)

    def _tokens(self, spec: dict, text: tf.Tensor) -> tf.Tensor:
        if spec.get("multi"):
            tokens = tf.strings.split(text, spec["separator"])
            tokens = tf.ragged.boolean_mask(tokens, tokens != "")
            width = spec["max_values"]
        elif spec["tokenizer"] == "char":
            tokens = tf.strings.unicode_split(text, "UTF-8", errors="replace")
            width = spec["max_tokens"]
        else:
            tokens = tf.strings.split(text)
            width = spec["max_tokens"]
        tokens = tokens[..., :width]
        ids = tf.ragged.map_flat_values(self._lookup, spec["name"], tokens)
        ids = ids.to_tensor(default_value=PAD_ID, shape=tf.concat([tf.shape(text), [width]], 0))
        empty = (ids[..., :1] == PAD_ID) & (tf.range(width) == 0)  # no token at all
        return tf.where(empty, MISSING_ID, ids)

    def call(self, inputs):
        length = tf.cast(inputs[seqex.LENGTH], tf.int32)
        steps = tf.shape(inputs[seqex.TIMESTAMP])[-1]
        mask = tf.sequence_mask(length, steps)
        outputs = {}
        for spec in self.features:
            name, kind = spec["name"], spec["kind"]
            if kind == "categorical" and not spec.get("multi"):
                ids = self._lookup(name, inputs[seqex.field_feature(name)])
            elif kind == "numeric":
                x = tf.cast(inputs[seqex.field_feature(name)], tf.float32)
                known = tf.where(tf.math.is_nan(x), 0.0, x)
                categories = inputs[seqex.field_feature(spec["bucket_by"])] \
                    if spec.get("bucket_by") else None
                if categories is not None:
                    buckets = self._category_buckets(spec, known, categories)
                else:
                    buckets = tf.raw_ops.Bucketize(input=known, boundaries=spec["boundaries"])
                if spec.get("continuous"):
                    outputs[value_input(name)] = tf.where(
                        mask, self._standardised(spec, x, categories), 0.0)
                ids = tf.where(tf.math.is_nan(x), MISSING_ID, buckets + NUM_RESERVED_IDS)
            elif kind in ("text", "categorical"):  # text, or multi-valued categorical
                ids = self._tokens(spec, inputs[seqex.field_feature(name)])
                outputs[name] = tf.where(mask[..., None], ids, PAD_ID)
                continue
            elif name == TIME_DELTA:
                seconds = tf.cast(inputs[seqex.DELTA_SECONDS], tf.float32)
                known = tf.math.is_finite(seconds)
                bucket = _floor_log2(1.0 + tf.maximum(tf.where(known, seconds, 0.0), 0.0))
                bucket = tf.clip_by_value(bucket, 0, spec["buckets"] - 1)
                ids = tf.where(known, bucket + NUM_RESERVED_IDS, MISSING_ID)
            elif name == TIME_AGE:
                age_ms = tf.maximum(spec["reference_ms"] - inputs[seqex.TIMESTAMP], 0)
                hours = tf.cast(age_ms, tf.float64) / MS_PER_HOUR
                bucket = tf.cast(tf.floor(2.0 * tf.math.log1p(hours) / tf.math.log(
                    tf.constant(2.0, tf.float64))), tf.int32)
                ids = tf.minimum(bucket, spec["buckets"] - 1) + NUM_RESERVED_IDS
            else:
                source = seqex.HOUR if name == TIME_HOUR else seqex.DAY_OF_WEEK
                ids = tf.cast(inputs[source], tf.int32) + NUM_RESERVED_IDS
            outputs[name] = tf.where(mask, ids, PAD_ID)
        outputs[PADDING_MASK] = mask
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features]})
        return config
