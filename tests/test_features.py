import json
import math

import numpy as np
import pytest

from autorisk_tf import evaluate
from autorisk_tf.data.schema import parse_schema
from beam import features

SCHEMA = """\
key: user_id
timestamp: {column: ts, format: iso8601}
fields:
  - {name: event_type, kind: categorical}
  - {name: amount, kind: numeric}
  - {name: item, kind: text}
time_features: {hour: true, day_of_week: false}
"""
EVENTS = """\
user_id,ts,event_type,amount,item
u1,2026-01-01T10:00:00,pay,10,apple
u1,2026-01-03T10:00:00,pay,30,pear
u1,2026-01-03T22:00:00,logon,,
u2,2026-01-02T09:00:00,logon,5,apple
u2,2026-01-02T09:30:00,,,apple
u3,2026-01-05T00:00:00,transfer,7,kiwi
u9,not-a-time,pay,1,x
"""


def _run(tmp_path, shuffle):
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    (tmp_path / "events.csv").write_text(EVENTS)
    out = tmp_path / f"out_{shuffle}"
    stats = features.run(["--input", str(tmp_path / "events.csv"), "--schema",
                          str(tmp_path / "schema.yaml"), "--output_dir", str(out),
                          "--top_values", "2", "--shuffle", shuffle,
                          "--as_of", "2026-01-06T00:00:00"])
    keys, values, columns = evaluate.load_features(str(out))
    rows = {k: dict(zip(columns, v, strict=True)) for k, v in zip(keys, values, strict=True)}
    return stats, rows, json.loads((out / "feature_info.json").read_text()), out


@pytest.mark.parametrize("shuffle", ["files", "beam"])
def test_feature_values_on_a_known_input(tmp_path, shuffle):
    stats, rows, info, out = _run(tmp_path, shuffle)
    assert stats["rows_in"] == 7 and stats["rows_used"] == 6 and stats["rows_rejected"] == 1
    assert stats["reconciled"] and stats["keys"] == 3
    assert stats["rejected_by_reason"] == {"bad_timestamp": 1}
    assert (out / "dead_letter").is_dir()
    # pay and logon both appear twice; ties are broken by value
    assert info["top_values"] == {"event_type": ["logon", "pay"]}
    assert sorted(rows) == ["u1", "u2", "u3"]
    u1 = rows["u1"]
    assert u1["n_events"] == 3 and u1["n_active_days"] == 2
    assert u1["recency_days"] == pytest.approx(2 + 2 / 24)  # 01-03 22:00 to 01-06 00:00
    assert u1["tenure_days"] == pytest.approx(2.5)
    assert u1["days_since_first"] == pytest.approx(4 + 14 / 24)
    assert u1["mean_gap_days"] == pytest.approx(1.25)
    assert u1["event_type_distinct"] == 2
    assert u1["event_type_top0_count"] == 1 and u1["event_type_top1_count"] == 2  # logon, pay
    assert u1["event_type_top1_share"] == pytest.approx(2 / 3)
    assert u1["event_type_other_share"] == 0
    assert u1["amount_mean"] == 20 and u1["amount_sum"] == 40 and u1["amount_max"] == 30
    assert u1["amount_std"] == 10 and u1["amount_last"] == 30
    assert u1["amount_missing_share"] == pytest.approx(1 / 3)
    assert u1["item_distinct"] == 2 and u1["item_missing_share"] == pytest.approx(1 / 3)
    assert u1["hour_10_share"] == pytest.approx(2 / 3) and u1["hour_22_share"] == pytest.approx(
        1 / 3)
    u2, u3 = rows["u2"], rows["u3"]
    assert u2["event_type_missing_share"] == 0.5 and u2["event_type_top0_count"] == 1
    assert u3["event_type_other_share"] == 1.0 and u3["event_type_top0_count"] == 0
    assert math.isnan(u3["mean_gap_days"])
    assert "dow_0_share" not in u1
    assert list(rows["u1"]) == features.feature_columns(parse_schema(SCHEMA), 2)


def test_both_shuffles_write_the_same_table(tmp_path):
    _, files_rows, _, _ = _run(tmp_path, "files")
    _, beam_rows, _, _ = _run(tmp_path, "beam")
    assert sorted(files_rows) == sorted(beam_rows)
    for key, row in files_rows.items():
        np.testing.assert_array_equal(np.array(list(row.values())),
                                      np.array(list(beam_rows[key].values())))


def test_bad_as_of_is_a_usage_error(tmp_path):
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    (tmp_path / "events.csv").write_text(EVENTS)
    code = features.main(["--input", str(tmp_path / "events.csv"), "--schema",
                          str(tmp_path / "schema.yaml"), "--output_dir", str(tmp_path / "o"),
                          "--as_of", "yesterday"])
    assert code == 2


BY_SCHEMA = """\
key: stay
timestamp: {column: ts, format: iso8601}
fields:
  - {name: parameter, kind: categorical}
  - {name: value, kind: numeric, bucket_by: parameter, continuous: true}
time_features: {hour: false, day_of_week: false}
"""
BY_EVENTS = """\
stay,ts,parameter,value
s1,2012-01-01T00:10:00,HR,80
s1,2012-01-01T00:20:00,Temp,37.5
s1,2012-01-01T00:30:00,HR,90
s1,2012-01-01T00:40:00,HR,70
s1,2012-01-01T00:50:00,HR,
s2,2012-01-01T00:05:00,Temp,38
s2,2012-01-01T00:06:00,pH,7.4
"""


def test_numbers_per_category_of_their_bucket_by_field(tmp_path):
    (tmp_path / "schema.yaml").write_text(BY_SCHEMA)
    (tmp_path / "events.csv").write_text(BY_EVENTS)
    out = tmp_path / "out"
    features.run(["--input", str(tmp_path / "events.csv"), "--schema",
                  str(tmp_path / "schema.yaml"), "--output_dir", str(out), "--top_values", "3"])
    keys, values, columns = evaluate.load_features(str(out))
    rows = {k: dict(zip(columns, v, strict=True)) for k, v in zip(keys, values, strict=True)}
    info = json.loads((out / "feature_info.json").read_text())
    assert info["top_values"]["parameter"] == ["HR", "Temp", "pH"]  # by count, ties by value
    s1, s2 = rows["s1"], rows["s2"]
    # HR at s1: 80, 90, 70 (the last HR has no value)
    assert [s1[f"value_by0_{stat}"] for stat in features.CATEGORY_STATS] == [
        80, 70, 70, 90, 80, 3]
    assert s1["value_by1_last"] == 37.5 and s1["value_by1_count"] == 1
    assert math.isnan(s1["value_by2_mean"]) and s1["value_by2_count"] == 0
    assert s2["value_by2_first"] == pytest.approx(7.4) and s2["value_by0_count"] == 0
    assert [c for c in columns if c.startswith("value_by")] == [
        f"value_by{i}_{stat}" for i in range(3) for stat in features.CATEGORY_STATS]
