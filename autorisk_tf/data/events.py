"""Raw rows to validated events: timestamp and number parsing, rejection reasons, time features.

This is the one place where a raw table row (a mapping of column name to value, as read from
CSV, JSON Lines or Parquet) becomes an event: `(key, timestamp_ms, values)` with one value per
schema field, or a `RejectedRow` with a reason. Values stay raw (strings and floats); turning
them into ids is the job of the model's preprocessing layer, so training and serving share it.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autorisk_tf.data.schema import Schema, TimeFeatures

# Rejection reasons, as written to dead-letter records and counted in stats.json.
WRONG_COLUMN_COUNT = "wrong_column_count"
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
MALFORMED_CSV = "malformed_csv"
MISSING_KEY = "missing_key"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
BAD_NUMBER = "bad_number"
BAD_LABEL = "bad_label"
DUPLICATE_LABEL_KEY = "duplicate_label_key"
IMPLAUSIBLE_TIMESTAMP = "implausible_timestamp"
DUPLICATE_EVENT = "duplicate_event"
REASONS = (WRONG_COLUMN_COUNT, INVALID_UTF8, MALFORMED_JSON, MALFORMED_CSV, MISSING_KEY,
           MISSING_TIMESTAMP, BAD_TIMESTAMP, IMPLAUSIBLE_TIMESTAMP, BAD_NUMBER, BAD_LABEL,
           DUPLICATE_LABEL_KEY, DUPLICATE_EVENT)

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_NAIVE_EPOCH = datetime.datetime(1970, 1, 1)
_MS_THRESHOLD = 1e11  # in `auto` format, larger epoch numbers are milliseconds
EARLIEST_TIME = "1990-01-01"  # default start of the plausible window of event times
DAY_MS = 86_400_000
MAX_ABS_NUMBER = 1e15  # default limit of a numeric value's magnitude


class RejectedRow(ValueError):
    """A row that cannot be used.

    Args:
        reason: str. One of `REASONS`.
        detail: str. What exactly is wrong (column and value).
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_missing(value: Any) -> bool:
    """True for None, empty or blank strings and NaN floats."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def parse_timestamp_ms(value: Any, fmt: str = "auto") -> int:
    """Parses a timestamp into integer milliseconds since the Unix epoch (UTC).

    Args:
        value: str, int, float or datetime. The raw value.
        fmt: str. `auto`, `iso8601`, `epoch_s`, `epoch_ms` or a strptime pattern. `auto`
            takes numbers above 1e11 as milliseconds, other numbers as seconds, and any
            other string as ISO 8601. Times without a zone are UTC.

    Returns:
        Milliseconds since the epoch.

    Raises:
        RejectedRow: with reason `bad_timestamp`.
    """
    try:
        if isinstance(value, datetime.datetime):
            moment = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return _epoch_number_ms(float(value), fmt)
        else:
            text = str(value).strip()
            if fmt in ("epoch_s", "epoch_ms"):
                return _epoch_number_ms(float(text), fmt)
            if fmt == "auto" and ":" not in text:  # no number holds a colon
                try:
                    return _epoch_number_ms(float(text), fmt)
                except ValueError:
                    pass
            if "%" in fmt:
                moment = datetime.datetime.strptime(text, fmt)
            else:
                moment = datetime.datetime.fromisoformat(text)
        delta = moment - (_NAIVE_EPOCH if moment.tzinfo is None else _EPOCH)  # naive: UTC
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    except (ValueError, OverflowError, TypeError) as e:
        raise RejectedRow(BAD_TIMESTAMP, f"{value!r}: {e}") from None


def _iso(ms: int) -> str:
    try:
        return (_EPOCH + datetime.timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S")
    except OverflowError:
        return f"{ms} ms after 1970"


def time_window(earliest: str | None = None, latest: str | None = None,
                now_ms: int | None = None) -> tuple[int, int]:
    """The window of plausible event times, in epoch milliseconds.

    Args:
        earliest: str or None. First plausible time (ISO 8601 or epoch number); None:
            `EARLIEST_TIME`.
        latest: str or None. Last plausible time; None: one day after `now_ms`.
        now_ms: int or None. The job's wall-clock time; None: now.

    Returns:
        `(earliest_ms, latest_ms)`.

    Raises:
        ValueError: a bound that is not a timestamp, or a window that is empty.
    """
    import time

    try:
        low = parse_timestamp_ms(earliest or EARLIEST_TIME)
        high = (parse_timestamp_ms(latest) if latest
                else (int(time.time() * 1000) if now_ms is None else now_ms) + DAY_MS)
    except RejectedRow as e:
        raise ValueError(f"plausible time window: {e.detail}") from None
    if low > high:
        raise ValueError(f"plausible time window is empty: {_iso(low)} is after {_iso(high)}")
    return low, high


def epoch_unit_error(values: Sequence[Any], fmt: str, column: str) -> str | None:
    """Whether sampled epoch numbers are in the other unit than the schema says.

    Seconds of the years 1990-2100 are 6.3e8-4.1e9; milliseconds of the same years are
    1,000 times more. A column declared `epoch_ms` whose typical value is in the seconds
    range (or the reverse) would put every event in January 1970 (or tens of centuries
    ahead) and shrink (or stretch) every gap 1,000 times.

    Args:
        values: sequence. Raw timestamp cells of the first rows.
        fmt: str. The schema's timestamp format.
        column: str. The timestamp column, for the message.

    Returns:
        None when the unit looks right (or the format is not an epoch unit); otherwise one
        line naming the column, what was found and what to use.
    """
    if fmt not in ("epoch_s", "epoch_ms"):
        return None
    numbers = []
    for value in values:
        try:
            number = abs(float(value))
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            numbers.append(number)
    if not numbers:
        return None
    typical = float(np.median(numbers))
    seconds = 6.3e8 <= typical <= 4.1e9
    millis = 6.3e11 <= typical <= 4.1e12
    if fmt == "epoch_ms" and seconds:
        found, expected, other = "seconds", "milliseconds", "epoch_s"
    elif fmt == "epoch_s" and millis:
        found, expected, other = "milliseconds", "seconds", "epoch_ms"
    else:
        return None
    return (f"timestamp column {column!r} is declared {fmt} ({expected} since 1970) but its "
            f"values look like {found} (median of the first {len(numbers)}: {typical:.0f}); "
            f"set `timestamp: {{format: {other}}}` in the schema")


def _epoch_number_ms(number: float, fmt: str) -> int:
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    if fmt == "epoch_ms" or (fmt == "auto" and abs(number) > _MS_THRESHOLD):
        return int(round(number))
    if fmt in ("epoch_s", "auto"):
        return int(round(number * 1000))
    raise ValueError(f"a number is not a {fmt} timestamp")


def parse_number(value: Any, column: str, max_abs: float = MAX_ABS_NUMBER) -> float:
    """Parses a numeric cell; missing values become NaN.

    One rule for values that are not finite numbers: only an empty or blank cell, or a null
    (None), is missing. NaN and the infinities, as text (`nan`, `inf`, `-Infinity` ...) or as
    float cells of Parquet or JSON Lines, are rejected like any other bad number. Text is
    read as plain decimal or scientific notation only: digit separators (`1_000`) and
    digits other than ASCII ones (full-width, Arabic-Indic) are bad numbers, as is a value
    whose magnitude exceeds `max_abs` (a sentinel such as 1e300 would wreck every scale).

    Args:
        value: str, int, float or None. The raw value.
        column: str. Column name, for the rejection detail.
        max_abs: float. Largest accepted magnitude.

    Returns:
        The value as float, NaN when missing.

    Raises:
        RejectedRow: with reason `bad_number` for a value that is not a finite number.
    """
    if value.__class__ is str:  # the common case (CSV), checked first for speed
        if not value or value.isspace():
            return math.nan
        if not value.isascii() or "_" in value:
            raise RejectedRow(BAD_NUMBER, f"column {column!r}: {value!r} is not plain "
                                          "decimal or scientific notation")
    elif value is None:
        return math.nan
    if isinstance(value, bool):  # JSON true/false: not a number, as `true` in CSV is not
        raise RejectedRow(BAD_NUMBER, f"column {column!r}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RejectedRow(BAD_NUMBER, f"column {column!r}: {value!r}") from None
    if not math.isfinite(number):
        raise RejectedRow(BAD_NUMBER, f"column {column!r}: {value!r} is not a finite number")
    if abs(number) > max_abs:
        raise RejectedRow(BAD_NUMBER, f"column {column!r}: {value!r} exceeds the limit "
                                      f"{max_abs:g} of its magnitude")
    return number


def _text_value(value: Any) -> str:
    if value.__class__ is str:
        return "" if not value or value.isspace() else value
    if is_missing(value):
        return ""
    return value if isinstance(value, str) else str(value)


class RowParser:
    """Turns raw rows into `(key, timestamp_ms, values)` events following a schema.

    Args:
        schema: Schema. The event schema.
        window: tuple of int or None. Plausible event times `(earliest_ms, latest_ms)`;
            a time outside is rejected as `implausible_timestamp`. None: `time_window()`
            (1990-01-01 to one day after now).

    Example:
    ```python
    parser = RowParser(schema)
    key, ts_ms, values = parser.parse({"user_id": "u1", "event_time": "2026-01-01T00:00:00",
                                       "event_type": "logon", "amount": ""})
    ```
    """

    def __init__(self, schema: Schema, window: tuple[int, int] | None = None):
        self.schema = schema
        self.window = window or time_window()
        self.columns = (schema.key, schema.timestamp_column) + tuple(
            f.column for f in schema.fields)
        self._converters = [
            (f.column, (lambda v, c=f.column, m=f.max_abs: parse_number(v, c, m))
             if f.kind == "numeric" else _text_value)
            for f in schema.fields
        ]

    def parse(self, row: Mapping[str, Any]) -> tuple[str, int, tuple]:
        """Validates and parses one row.

        Args:
            row: Mapping. Column name to raw value; absent columns count as missing.

        Returns:
            `(key, timestamp_ms, values)`: values holds, per schema field in order, a string
            (categorical and text; "" when missing) or a float (numeric; NaN when missing).

        Raises:
            RejectedRow: the row has no key or timestamp, a time outside the plausible
                window, or an unparsable value.
        """
        key = row.get(self.schema.key)
        if is_missing(key):
            raise RejectedRow(MISSING_KEY, f"column {self.schema.key!r} is empty")
        raw_ts = row.get(self.schema.timestamp_column)
        if is_missing(raw_ts):
            raise RejectedRow(MISSING_TIMESTAMP,
                              f"column {self.schema.timestamp_column!r} is empty")
        ts_ms = parse_timestamp_ms(raw_ts, self.schema.timestamp_format)
        low, high = self.window
        if not low <= ts_ms <= high:
            raise RejectedRow(IMPLAUSIBLE_TIMESTAMP, (
                f"column {self.schema.timestamp_column!r}: {raw_ts!r} is {_iso(ts_ms)}, "
                f"outside the plausible window {_iso(low)} to {_iso(high)}"))
        get = row.get
        values = tuple([convert(get(column)) for column, convert in self._converters])
        return str(key).strip(), ts_ms, values


    def check_padded(self, columns: Mapping[str, np.ndarray], timestamps_ms: np.ndarray,
                     lengths: np.ndarray) -> None:
        """Applies `parse`'s rules to a serving request's padded columns.

        A value that `parse` would reject in the batch path is rejected here too: a time
        outside the plausible window, a number that is infinite or over its field's
        `max_abs`. (NaN marks a missing number, as an empty cell does in a table.)

        Args:
            columns: dict. Field name to [B, T] values (float for numeric fields).
            timestamps_ms: int64 [B, T]. Event times.
            lengths: int [B]. Real events per user; later steps are padding.

        Raises:
            RejectedRow: naming the user (row), the event (step), the field and the value.
        """
        steps = np.arange(timestamps_ms.shape[1])[None, :]
        real = steps < np.asarray(lengths)[:, None]

        def fail(bad: np.ndarray, reason: str, what: str, values: np.ndarray, text):
            user, event = (int(i) for i in np.argwhere(bad)[0])
            raise RejectedRow(reason, f"user {user} event {event}: {what} "
                                      f"{text(values[user, event])}")

        low, high = self.window
        bad = real & ((timestamps_ms < low) | (timestamps_ms > high))
        if bad.any():
            fail(bad, IMPLAUSIBLE_TIMESTAMP, "timestamp_ms", timestamps_ms,
                 lambda v: f"{int(v)} is {_iso(int(v))}, outside the plausible window "
                           f"{_iso(low)} to {_iso(high)}")
        for field in self.schema.fields_of_kind("numeric"):
            values = np.asarray(columns[field.name], np.float64)
            with np.errstate(invalid="ignore"):
                bad = real & ~np.isnan(values) & ~(np.abs(values) <= field.max_abs)
            if bad.any():
                fail(bad, BAD_NUMBER, f"field {field.name!r}:", values,
                     lambda v, m=field.max_abs: f"{v!r} is not a finite number of magnitude "
                                                f"at most {m:g}")


def parse_label(value: Any, kind: str, column: str) -> float | str:
    """Parses one label cell.

    Binary and numeric labels become floats (NaN when missing), categorical ones strings
    ("" when missing).

    Args:
        value: Any. The raw cell.
        kind: str. `binary`, `numeric` or `categorical`.
        column: str. Column name, for the rejection detail.

    Returns:
        The parsed label.

    Raises:
        RejectedRow: with reason `bad_label` for an unparsable value, or a binary label
            that is not 0 or 1.
    """
    if kind == "categorical":
        return _text_value(value)
    try:
        number = parse_number(value, column)
    except RejectedRow as e:
        raise RejectedRow(BAD_LABEL, e.detail) from None
    if kind == "binary" and not (math.isnan(number) or number in (0.0, 1.0)):
        raise RejectedRow(BAD_LABEL, f"column {column!r}: {value!r} is not 0 or 1")
    return number


def split_of(key: str, fractions: Sequence[float]) -> int:
    """Assigns a key to a split by a stable hash (the same on every machine and run).

    Args:
        key: str. The sequence key.
        fractions: sequence of float. Split fractions (train, valid, test), summing to 1.

    Returns:
        Index of the split.
    """
    point = int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:8], "little") / 2.0**64
    total = 0.0
    for index, fraction in enumerate(fractions):
        total += fraction
        if point < total:
            return index
    return len(fractions) - 1


def shard_of(key: str, num_shards: int) -> int:
    """Assigns a key to one of `num_shards` shards by a stable hash, independent of its split.

    Args:
        key: str. The sequence key.
        num_shards: int. Shards of the split (positive).

    Returns:
        Index of the shard, in [0, num_shards).
    """
    # The digest's second half: `split_of` uses the first, so shards mix every split point.
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[8:], "little") % num_shards


def time_features(timestamps_ms: np.ndarray, config: TimeFeatures) -> dict[str, np.ndarray]:
    """Derives time features from the timestamps of one time-sorted history.

    Args:
        timestamps_ms: int64 array [n]. Sorted timestamps in milliseconds.
        config: TimeFeatures. Which features, and the UTC offset for hour and day.

    Returns:
        `delta_seconds` (float32, seconds since the previous event, NaN for the first),
        `hour` (int64, 0-23) and `day_of_week` (int64, Monday is 0).
    """
    ts = np.asarray(timestamps_ms, dtype=np.int64)
    delta = np.full(ts.shape, np.nan, dtype=np.float64)
    delta[1:] = np.diff(ts) / 1000.0
    local_s = ts // 1000 + int(round(config.utc_offset_hours * 3600))
    return {
        "delta_seconds": delta.astype(np.float32),
        "hour": (local_s // 3600) % 24,
        "day_of_week": (local_s // 86_400 + 3) % 7,  # 1970-01-01 was a Thursday
    }
