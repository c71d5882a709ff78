"""The on-disk format: one `tf.train.SequenceExample` per sequence (user or window).

Context features:
  `key` (bytes), `length` (int64, events in this example), `num_events_total` (int64, events
  in the user's whole history), `window_index` (int64, 0 unless windows were asked for),
  `first_timestamp_ms` / `last_timestamp_ms` (int64), and `label/<name>` per label column
  (float for binary and numeric labels, NaN when missing; bytes for categorical ones).
Feature lists (one entry per event, time-sorted):
  `event/<field>`: bytes for categorical and text fields ("" when missing), float for numeric
  fields (NaN when missing); `time/timestamp_ms` (int64), `time/delta_seconds` (float, NaN for
  a user's first event), `time/hour` and `time/day_of_week` (int64).

`encode_sequence` writes this format (used by the Beam job and by serving clients);
`parsing_spec` gives the `tf.io.parse_sequence_example` specs that read it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from autorisk_tf.data.schema import Schema

KEY = "key"
LENGTH = "length"
NUM_EVENTS_TOTAL = "num_events_total"
WINDOW_INDEX = "window_index"
FIRST_TIMESTAMP = "first_timestamp_ms"
LAST_TIMESTAMP = "last_timestamp_ms"
TIMESTAMP = "time/timestamp_ms"
DELTA_SECONDS = "time/delta_seconds"
HOUR = "time/hour"
DAY_OF_WEEK = "time/day_of_week"


def field_feature(name: str) -> str:
    """Feature-list name of an event field."""
    return f"event/{name}"


def label_feature(name: str) -> str:
    """Context feature name of a label column."""
    return f"label/{name}"


def encode_sequence(
    schema: Schema,
    key: str,
    timestamps_ms: np.ndarray,
    columns: Sequence[Sequence],
    time_features: Mapping[str, np.ndarray],
    labels: Mapping[str, float | str] | None = None,
    window_index: int = 0,
    num_events_total: int | None = None,
) -> bytes:
    """Serialises one time-sorted sequence as a `tf.train.SequenceExample`.

    Args:
        schema: Schema. The event schema.
        key: str. The sequence key.
        timestamps_ms: int array [n]. Event times, sorted.
        columns: one sequence of n raw values per schema field, in schema order (strings for
            categorical and text fields, floats for numeric ones).
        time_features: Mapping. `delta_seconds`, `hour`, `day_of_week` arrays of length n,
            as returned by `events.time_features`.
        labels: Mapping or None. Label name to parsed value.
        window_index: int. Index of this window in the user's history.
        num_events_total: int or None. Events in the whole history. Defaults to n.

    Returns:
        The serialised proto.
    """
    from tensorflow.core.example import example_pb2  # imported late: it loads TensorFlow

    example = example_pb2.SequenceExample()
    context = example.context.feature
    n = len(timestamps_ms)
    context[KEY].bytes_list.value.append(key.encode("utf-8"))
    context[LENGTH].int64_list.value.append(n)
    context[NUM_EVENTS_TOTAL].int64_list.value.append(n if num_events_total is None
                                                       else num_events_total)
    context[WINDOW_INDEX].int64_list.value.append(window_index)
    if n:
        context[FIRST_TIMESTAMP].int64_list.value.append(int(timestamps_ms[0]))
        context[LAST_TIMESTAMP].int64_list.value.append(int(timestamps_ms[-1]))
    for label in schema.labels:
        value = (labels or {}).get(label.name)
        feature = context[label_feature(label.name)]
        if label.kind == "categorical":
            feature.bytes_list.value.append((value or "").encode("utf-8"))
        else:
            feature.float_list.value.append(np.nan if value is None else value)

    lists = example.feature_lists.feature_list
    for field, values in zip(schema.fields, columns, strict=True):
        target = lists[field_feature(field.name)].feature
        if field.kind == "numeric":
            for value in values:
                target.add().float_list.value.append(value)
        else:
            for value in values:
                target.add().bytes_list.value.append(value.encode("utf-8"))
    _append_ints(lists[TIMESTAMP].feature, timestamps_ms)
    for value in time_features["delta_seconds"].tolist():
        lists[DELTA_SECONDS].feature.add().float_list.value.append(value)
    _append_ints(lists[HOUR].feature, time_features["hour"])
    _append_ints(lists[DAY_OF_WEEK].feature, time_features["day_of_week"])
    return example.SerializeToString()


def _append_ints(target, values) -> None:
    for value in np.asarray(values, dtype=np.int64).tolist():
        target.add().int64_list.value.append(value)


def parsing_spec(schema: Schema) -> tuple[dict, dict]:
    """Returns the context and sequence feature specs for `tf.io.parse_sequence_example`.

    Args:
        schema: Schema. The event schema.

    Returns:
        `(context_features, sequence_features)` dicts of `tf.io` feature specs.
    """
    import tensorflow as tf

    context = {
        KEY: tf.io.FixedLenFeature([], tf.string),
        LENGTH: tf.io.FixedLenFeature([], tf.int64),
        NUM_EVENTS_TOTAL: tf.io.FixedLenFeature([], tf.int64),
        WINDOW_INDEX: tf.io.FixedLenFeature([], tf.int64),
        FIRST_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        LAST_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }
    for label in schema.labels:
        if label.kind == "categorical":
            spec = tf.io.FixedLenFeature([], tf.string, default_value="")
        else:
            spec = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
        context[label_feature(label.name)] = spec
    sequence = {
        TIMESTAMP: tf.io.FixedLenSequenceFeature([], tf.int64),
        DELTA_SECONDS: tf.io.FixedLenSequenceFeature([], tf.float32),
        HOUR: tf.io.FixedLenSequenceFeature([], tf.int64),
        DAY_OF_WEEK: tf.io.FixedLenSequenceFeature([], tf.int64),
    }
    for field in schema.fields:
        dtype = tf.float32 if field.kind == "numeric" else tf.string
        sequence[field_feature(field.name)] = tf.io.FixedLenSequenceFeature([], dtype)
    return context, sequence
