"""Raw events of a batch of users, as a serving request carries them, to parsed tensors.

A request holds, per user, the raw events that `beam.preprocess` would have read from the
event table: one tensor per schema field (strings for categorical and text fields, float
for numeric ones, NaN when missing), `timestamp_ms` (int64, milliseconds since the epoch,
UTC) and `length` (events of each user). Users are padded to the longest one, which is what
TF Serving's REST "instances" can stack.

`parse_raw_batch` does in the graph what `beam.preprocess` does per user: normalise missing
values as `events.RowParser` does, sort events by time (stable), derive the time features
of `events.time_features`, and keep the most recent `max_len` events. Its output is what
`reader.parse_batch` returns for the TFRecords of the same users, so the `EventPreprocessor`
that follows sees the same tensors at training and at serving. Tests check both against
each other.
"""

from __future__ import annotations

import tensorflow as tf

from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.schema import Schema, TimeFeatures

TIMESTAMP_INPUT = seqex.TIMESTAMP_INPUT
LENGTH_INPUT = seqex.LENGTH_INPUT
_INT64_MAX = tf.int64.max


def raw_input_specs(schema: Schema) -> dict[str, tf.TensorSpec]:
    """The named inputs of a raw-events request.

    Args:
        schema: Schema. The event schema.

    Returns:
        Input name to `tf.TensorSpec`: each schema field ([B, T], string or float32),
        `timestamp_ms` (int64 [B, T]) and `length` (int64 [B]).

    Raises:
        ValueError: a field is named like one of the other inputs.
    """
    clash = {f.name for f in schema.fields} & {TIMESTAMP_INPUT, LENGTH_INPUT}
    if clash:
        raise ValueError(f"schema field(s) {sorted(clash)} clash with the request inputs "
                         f"{TIMESTAMP_INPUT!r} and {LENGTH_INPUT!r}: rename them")
    specs = {f.name: tf.TensorSpec([None, None], tf.float32 if f.kind == "numeric"
                                   else tf.string, name=f.name) for f in schema.fields}
    specs[TIMESTAMP_INPUT] = tf.TensorSpec([None, None], tf.int64, name=TIMESTAMP_INPUT)
    specs[LENGTH_INPUT] = tf.TensorSpec([None], tf.int64, name=LENGTH_INPUT)
    return specs


def time_features(timestamps_ms: tf.Tensor, config: TimeFeatures) -> dict[str, tf.Tensor]:
    """The graph twin of `events.time_features`, on time-sorted rows.

    Args:
        timestamps_ms: int64 [B, T]. Sorted timestamps per row.
        config: TimeFeatures. The UTC offset for hour and day.

    Returns:
        `delta_seconds` float32 [B, T] (NaN for each row's first step), `hour` and
        `day_of_week` int64 [B, T] (Monday is 0).
    """
    diff = tf.cast(timestamps_ms[:, 1:] - timestamps_ms[:, :-1], tf.float64) / 1000.0
    first = tf.fill(tf.stack([tf.shape(timestamps_ms)[0], 1]),
                    tf.constant(float("nan"), tf.float64))
    delta = tf.concat([first, diff], axis=1)[:, : tf.shape(timestamps_ms)[1]]
    local_s = (tf.math.floordiv(timestamps_ms, 1000)
               + int(round(config.utc_offset_hours * 3600)))
    return {seqex.DELTA_SECONDS: tf.cast(delta, tf.float32),
            seqex.HOUR: tf.math.floormod(tf.math.floordiv(local_s, 3600), 24),
            seqex.DAY_OF_WEEK: tf.math.floormod(tf.math.floordiv(local_s, 86_400) + 3, 7)}


def truncate_recent(parsed: dict[str, tf.Tensor], max_len: int) -> dict[str, tf.Tensor]:
    """Keeps the most recent `max_len` events of each row, as `beam.preprocess` does.

    Args:
        parsed: dict. `length` [B], per-step tensors [B, T] (feature lists) and per-row
            tensors [B] (context), as `reader.parse_batch` returns.
        max_len: int. Most events kept per row.

    Returns:
        The same dict with per-step tensors cut to [B, min(T, max_len)], each row's last
        `min(length, max_len)` events first, and `length` updated.
    """
    length = tf.cast(parsed[seqex.LENGTH], tf.int32)
    steps = tf.shape(parsed[seqex.TIMESTAMP])[1]
    kept = tf.minimum(steps, max_len)
    start = tf.maximum(length - max_len, 0)
    index = tf.minimum(start[:, None] + tf.range(kept)[None, :], tf.maximum(steps - 1, 0))
    out = {}
    for name, value in parsed.items():
        per_step = value.shape.rank == 2 and name.startswith(("event/", "time/"))
        out[name] = tf.gather(value, index, batch_dims=1) if per_step else value
    out[seqex.LENGTH] = tf.cast(tf.minimum(length, max_len), parsed[seqex.LENGTH].dtype)
    return out


def parse_raw_batch(inputs: dict[str, tf.Tensor], schema: Schema,
                    max_len: int) -> dict[str, tf.Tensor]:
    """Raw request tensors to what `reader.parse_batch` gives for the same users.

    Steps past a user's `length` are ignored. Strings that are empty or only spaces and
    non-finite numbers are missing values (the Beam job rejects infinite numbers; a
    request has no row to reject, so they count as missing).

    Args:
        inputs: dict. The tensors `raw_input_specs` names.
        schema: Schema. The event schema.
        max_len: int. Most recent events kept per user.

    Returns:
        `length`, `time/timestamp_ms`, the derived time features and `event/<field>` per
        field, sorted by time and truncated; no key or labels.
    """
    length = tf.cast(inputs[LENGTH_INPUT], tf.int64)
    timestamps = tf.cast(inputs[TIMESTAMP_INPUT], tf.int64)
    steps = tf.shape(timestamps)[1]
    valid = tf.sequence_mask(length, steps)
    order = tf.argsort(tf.where(valid, timestamps, _INT64_MAX), axis=1, stable=True)
    timestamps = tf.gather(timestamps, order, batch_dims=1)
    parsed = {seqex.LENGTH: length, seqex.TIMESTAMP: tf.where(valid, timestamps, 0)}
    parsed.update(time_features(timestamps, schema.time_features))
    for field in schema.fields:
        value = tf.gather(inputs[field.name], order, batch_dims=1)
        if field.kind == "numeric":
            value = tf.where(tf.math.is_finite(value), value, float("nan"))
        else:
            value = tf.where(tf.strings.strip(value) == "", "", value)
        parsed[seqex.field_feature(field.name)] = value
    return truncate_recent(parsed, max_len)
