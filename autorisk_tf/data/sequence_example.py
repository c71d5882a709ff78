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
# The raw-events request (the SavedModel's `serving_default`, `autorisk_tf.data.raw_batch`):
# one input per schema field plus these two. Kept here, free of TensorFlow, for clients.
TIMESTAMP_INPUT = "timestamp_ms"
LENGTH_INPUT = "length"


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
    n = len(timestamps_ms)
    context = [(KEY, _bytes_feature(key)), (LENGTH, _int64_feature(n)),
               (NUM_EVENTS_TOTAL, _int64_feature(n if num_events_total is None
                                                 else num_events_total)),
               (WINDOW_INDEX, _int64_feature(window_index))]
    if n:
        context += [(FIRST_TIMESTAMP, _int64_feature(int(timestamps_ms[0]))),
                    (LAST_TIMESTAMP, _int64_feature(int(timestamps_ms[-1])))]
    for label in schema.labels:
        value = (labels or {}).get(label.name)
        context.append((label_feature(label.name), _bytes_feature(value or "")
                        if label.kind == "categorical"
                        else _float_feature(np.nan if value is None else value)))
    lists = [(field_feature(field.name), _float_list(values) if field.kind == "numeric"
              else _bytes_list(values))
             for field, values in zip(schema.fields, columns, strict=True)]
    lists += [(TIMESTAMP, _int64_list(timestamps_ms)),
              (DELTA_SECONDS, _float_list(time_features["delta_seconds"])),
              (HOUR, _int64_list(time_features["hour"])),
              (DAY_OF_WEEK, _int64_list(time_features["day_of_week"]))]
    # SequenceExample: context = 1 (Features: map feature = 1), feature_lists = 2
    # (FeatureLists: map feature_list = 1); a map entry holds key = 1 and value = 2.
    return b"".join(
        [_field(1, b"".join(_map_entry(name, value) for name, value in context))]
        + [_field(2, _map_entry(name, body)) for name, body in lists])



def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def context_bytes(record: bytes) -> bytes:
    """The serialised context (a `tf.train.Features`) of a serialised SequenceExample.

    Reads the top-level fields only, so the feature lists (nearly all of a record) are
    skipped, not parsed: `tf.train.Features.FromString(context_bytes(record))` equals the
    parsed proto's `context`, at a fraction of the cost.

    Args:
        record: bytes. A serialised `tf.train.SequenceExample`.

    Returns:
        The context's bytes (b"" where the record has none).

    Raises:
        ValueError: the bytes are not a well-formed protobuf message.
    """
    parts, pos = [], 0
    while pos < len(record):
        tag, pos = _read_varint(record, pos)
        wire_type = tag & 7
        if wire_type == 0:
            _, pos = _read_varint(record, pos)
            continue
        if wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            size, pos = _read_varint(record, pos)
            if tag >> 3 == 1:
                parts.append(record[pos:pos + size])
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > len(record):
            raise ValueError("truncated field")
    return b"".join(parts)


# Examples are written straight in protobuf wire format: the protobuf API costs about a
# microsecond per value (the slowest step of preprocessing) and loads TensorFlow into every
# Beam worker. A FeatureList is `repeated Feature feature = 1`; a Feature holds
# `bytes_list = 1`, `float_list = 2` or `int64_list = 3`, each a list with `value = 1`
# (packed for numbers). Tests check the bytes against the protobuf API.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINTS = [_varint(n) for n in range(1 << 14)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    return (bytes([number << 3 | 2]) + (_SMALL_VARINTS[size] if size < 1 << 14
                                         else _varint(size)) + payload)


def _map_entry(name: str, value: bytes) -> bytes:
    return _field(1, _field(1, name.encode("utf-8")) + _field(2, value))


def _bytes_feature(value: str) -> bytes:
    return _field(1, _field(1, value.encode("utf-8")))


def _float_feature(value: float) -> bytes:
    return _field(2, _field(1, np.float32(value).astype("<f4").tobytes()))


def _int64_feature(value: int) -> bytes:
    return _field(3, _field(1, _varint(value & (1 << 64) - 1)))


def _bytes_list(values: Sequence[str]) -> bytes:
    entries = {value: _field(1, _bytes_feature(value)) for value in set(values)}
    return b"".join([entries[value] for value in values])


def _float_list(values) -> bytes:
    # One entry: FeatureList.feature (0a 08) > Feature.float_list (12 06) > packed value
    # (0a 04) > 4 little-endian bytes.
    floats = np.asarray(values, dtype="<f4")
    rows = np.empty((floats.size, 10), dtype=np.uint8)
    rows[:, :6] = (0x0A, 0x08, 0x12, 0x06, 0x0A, 0x04)
    rows[:, 6:] = floats.view(np.uint8).reshape(-1, 4)
    return rows.tobytes()


def _int64_list(values) -> bytes:
    # One entry: FeatureList.feature (0a L+4) > Feature.int64_list (1a L+2) > packed value
    # (0a L) > the value as an L-byte varint (two's complement for negatives, so L <= 10).
    remaining = np.asarray(values, dtype=np.int64).view(np.uint64).copy()
    n = remaining.size
    rows = np.zeros((n, 16), dtype=np.uint8)
    lengths = np.ones(n, dtype=np.int64)
    for i in range(10):
        rows[:, 6 + i] = (remaining & np.uint64(0x7F)).astype(np.uint8)
        remaining >>= np.uint64(7)
        more = remaining > 0
        if not more.any():
            break
        rows[more, 6 + i] |= 0x80
        lengths += more
    rows[:, 0], rows[:, 1] = 0x0A, lengths + 4
    rows[:, 2], rows[:, 3] = 0x1A, lengths + 2
    rows[:, 4], rows[:, 5] = 0x0A, lengths
    return rows[np.arange(16) < (lengths + 6)[:, None]].tobytes()


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
