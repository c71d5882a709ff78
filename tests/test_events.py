import math

import numpy as np
import pytest

from autorisk_tf.data import events
from autorisk_tf.data.schema import TimeFeatures, parse_schema

JAN1_2026_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday


@pytest.mark.parametrize("value, fmt, expected", [
    ("2026-01-01T00:00:00", "iso8601", JAN1_2026_MS),
    ("2026-01-01T08:00:00+08:00", "auto", JAN1_2026_MS),
    ("2026-01-01T00:00:00.250Z", "auto", JAN1_2026_MS + 250),
    ("2026-01-01 00:00:01", "auto", JAN1_2026_MS + 1000),
    ("1767225600", "auto", JAN1_2026_MS),
    ("1767225600123", "auto", JAN1_2026_MS + 123),
    ("1767225600.5", "epoch_s", JAN1_2026_MS + 500),
    ("1767225600123", "epoch_ms", JAN1_2026_MS + 123),
    (1767225600, "auto", JAN1_2026_MS),
    ("20260101", "%Y%m%d", JAN1_2026_MS),
])
def test_parse_timestamp(value, fmt, expected):
    assert events.parse_timestamp_ms(value, fmt) == expected


@pytest.mark.parametrize("value, fmt", [
    ("yesterday", "auto"), ("2026-13-01", "iso8601"), ("nan", "epoch_s"),
    ("2026-01-01", "epoch_ms"), ("1/1/2026", "%Y%m%d")])
def test_bad_timestamp_is_rejected(value, fmt):
    with pytest.raises(events.RejectedRow) as error:
        events.parse_timestamp_ms(value, fmt)
    assert error.value.reason == events.BAD_TIMESTAMP


SCHEMA = parse_schema("key: u\ntimestamp: {column: t}\nfields:\n"
                      "  - {name: kind, kind: categorical}\n"
                      "  - {name: amount, kind: numeric}\n"
                      "  - {name: item, kind: text}\n")


def test_row_parser_values_and_missing():
    parser = events.RowParser(SCHEMA)
    key, ts, values = parser.parse({"u": " 42 ", "t": "1767225600", "kind": "pay",
                                    "amount": "12.5", "item": "滴滴 ride"})
    assert (key, ts, values) == ("42", JAN1_2026_MS, ("pay", 12.5, "滴滴 ride"))
    _, _, values = parser.parse({"u": 7, "t": 1767225600, "amount": None})
    assert values[0] == "" and math.isnan(values[1]) and values[2] == ""


@pytest.mark.parametrize("row, reason", [
    ({"t": "1767225600"}, events.MISSING_KEY),
    ({"u": "  ", "t": "1767225600"}, events.MISSING_KEY),
    ({"u": "a"}, events.MISSING_TIMESTAMP),
    ({"u": "a", "t": "soon"}, events.BAD_TIMESTAMP),
    ({"u": "a", "t": "1767225600", "amount": "12,5"}, events.BAD_NUMBER),
    ({"u": "a", "t": "1767225600", "amount": "inf"}, events.BAD_NUMBER),
    ({"u": "a", "t": "1767225600", "amount": "-Infinity"}, events.BAD_NUMBER),
    ({"u": "a", "t": "1767225600", "amount": "nan"}, events.BAD_NUMBER),
    ({"u": "a", "t": "1767225600", "amount": " NaN "}, events.BAD_NUMBER),
    ({"u": "a", "t": "1767225600", "amount": float("nan")}, events.BAD_NUMBER),
    ({"u": "a", "t": "1767225600", "amount": float("-inf")}, events.BAD_NUMBER),
])
def test_row_parser_rejections(row, reason):
    with pytest.raises(events.RejectedRow) as error:
        events.RowParser(SCHEMA).parse(row)
    assert error.value.reason == reason


def test_non_finite_numbers_follow_one_rule():
    """Only empty cells and nulls are missing; nan and inf in any form are rejected."""
    for missing in ("", "  ", None):
        assert math.isnan(events.parse_number(missing, "amount"))
    for bad in ("nan", "NaN", "inf", "-inf", "Infinity", float("nan"), float("inf")):
        with pytest.raises(events.RejectedRow) as error:
            events.parse_number(bad, "amount")
        assert error.value.reason == events.BAD_NUMBER
        assert error.value.detail == f"column 'amount': {bad!r} is not a finite number"
    with pytest.raises(events.RejectedRow) as error:
        events.parse_label("nan", "binary", "y")
    assert error.value.reason == events.BAD_LABEL


def test_parse_label():
    assert events.parse_label("1", "binary", "y") == 1.0
    assert math.isnan(events.parse_label("", "binary", "y"))
    assert events.parse_label("x", "categorical", "y") == "x"
    for bad in ("2", "yes"):
        with pytest.raises(events.RejectedRow) as error:
            events.parse_label(bad, "binary", "y")
        assert error.value.reason == events.BAD_LABEL


def test_time_features_known_values():
    ts = np.array([JAN1_2026_MS, JAN1_2026_MS + 90_000, JAN1_2026_MS + 86_400_000 * 4 + 3_600_000])
    features = events.time_features(ts, TimeFeatures())
    assert math.isnan(features["delta_seconds"][0])
    np.testing.assert_allclose(features["delta_seconds"][1:], [90.0, 4 * 86_400 + 3_510])
    np.testing.assert_array_equal(features["hour"], [0, 0, 1])
    np.testing.assert_array_equal(features["day_of_week"], [3, 3, 0])  # Thu, Thu, Mon
    shifted = events.time_features(ts, TimeFeatures(utc_offset_hours=-1.0))
    np.testing.assert_array_equal(shifted["hour"], [23, 23, 0])
    np.testing.assert_array_equal(shifted["day_of_week"], [2, 2, 0])


def test_split_is_stable_and_follows_fractions():
    keys = [f"user{i}" for i in range(20_000)]
    splits = np.array([events.split_of(k, (0.8, 0.1, 0.1)) for k in keys])
    assert splits.tolist() == [events.split_of(k, (0.8, 0.1, 0.1)) for k in keys]
    np.testing.assert_allclose(np.bincount(splits) / len(keys), [0.8, 0.1, 0.1], atol=0.01)
    assert events.split_of("user1", (1.0, 0.0, 0.0)) == 0


def test_shard_of_is_balanced_within_every_split():
    import hashlib

    keys = [f"user{i}" for i in range(4000)]
    train = [k for k in keys if events.split_of(k, (0.8, 0.1, 0.1)) == 0]
    for group in (keys, train):
        counts = np.bincount([events.shard_of(k, 4) for k in group], minlength=4)
        assert counts.min() > 0.9 * len(group) / 4 and counts.max() < 1.1 * len(group) / 4
    # A stable hash (not Python's salted `hash`): the digest's second half, modulo N.
    digest = hashlib.md5(b"user7").digest()
    assert events.shard_of("user7", 5) == int.from_bytes(digest[8:], "little") % 5
