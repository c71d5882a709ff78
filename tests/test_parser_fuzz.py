"""Fuzzing the event parser: arbitrary CSV lines, JSON values and Parquet cells.

Whatever the input, no exception escapes `ParseEventsFn`, and every row it counts is either
used (in an emitted batch) or a dead letter with a reason and detail: the counts reconcile.
"""

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam import preprocess
from tests.conftest import SCHEMA

COLUMNS = ("user_id", "ts", "event_type", "amount", "item")
SPECIAL = st.sampled_from(["", " ", "nan", "NaN", "inf", "-Infinity", "1e400", "-0", '"',
                           '""', "a,b", "\n", "\r\n", "\x00", "1767225600", "1767225600000",
                           "2026-01-01T10:00:00", "2026-01-01T10:00:00+08:00", "9" * 40,
                           "滴滴 ride", "\ufeff"])
CELL = st.one_of(SPECIAL, st.text(max_size=12), st.integers().map(str),
                 st.floats().map(repr))
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _parse(path):
    fn = preprocess.ParseEventsFn(SCHEMA, "auto", (0.8, 0.1, 0.1), chunk_rows=3)
    fn.setup()
    used, outputs = 0, {preprocess.DEAD_LETTER: [], preprocess.SUMMARY: [],
                        preprocess.COUNTS: [], preprocess.NUMBERS: []}
    for out in fn.process((0, str(path))):
        if hasattr(out, "tag"):
            outputs[out.tag].append(out.value)
        else:
            used += len(out[1][0])  # a batch: (timestamps, orders, columns)
    dead, summaries = outputs[preprocess.DEAD_LETTER], outputs[preprocess.SUMMARY]
    for (table, value), count in outputs[preprocess.COUNTS]:
        assert table.startswith(("vocab/", "tokens/")) and isinstance(value, str) and count > 0
    for (field, category), values in outputs[preprocess.NUMBERS]:
        assert field == "amount" and category == "" and values
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    (summary,) = summaries
    assert summary.rows_in == used + len(dead)
    assert sum(summary.rejected.values()) == len(dead)
    dead = [json.loads(line) for line in dead]  # dead letters are written as JSON lines
    for letter in dead:
        assert letter["reason"] and letter["file"] == str(path) and letter["line"] >= 1
    return summary, used, dead


@SETTINGS
@given(rows=st.lists(st.lists(CELL, max_size=7), max_size=8),
       garbage=st.lists(st.binary(max_size=20), max_size=3))
def test_arbitrary_csv_lines(tmp_path_factory, rows, garbage):
    path = tmp_path_factory.mktemp("fuzz") / "events.csv"
    body = "\n".join(",".join(row) for row in rows).encode("utf-8", "surrogatepass")
    path.write_bytes(b"user_id,ts,event_type,amount,item\n" + body + b"\n"
                     + b"\n".join(garbage))
    _parse(path)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | SPECIAL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3), max_leaves=6)


@SETTINGS
@given(records=st.lists(st.one_of(
    st.fixed_dictionaries({c: JSON_VALUE for c in COLUMNS}),
    st.dictionaries(st.sampled_from(COLUMNS), JSON_VALUE), JSON_VALUE), max_size=8),
    garbage=st.lists(st.binary(max_size=20), max_size=3))
def test_arbitrary_json_lines(tmp_path_factory, records, garbage):
    path = tmp_path_factory.mktemp("fuzz") / "events.jsonl"
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")
             for r in records]
    path.write_bytes(b"\n".join(lines + garbage) + b"\n")
    _parse(path)


PARQUET_COLUMNS = {
    "user_id": st.one_of(st.none(), st.text(max_size=6), SPECIAL),
    "ts": st.one_of(st.none(), st.integers(-2**62, 2**62)),
    "event_type": st.one_of(st.none(), st.text(max_size=6)),
    "amount": st.one_of(st.none(), st.floats()),
    "item": st.one_of(st.none(), st.text(max_size=10), SPECIAL),
}


@SETTINGS
@given(data=st.data(), size=st.integers(0, 8))
def test_arbitrary_parquet_cells(tmp_path_factory, data, size):
    path = tmp_path_factory.mktemp("fuzz") / "events.parquet"
    columns = {name: data.draw(st.lists(cells, min_size=size, max_size=size), label=name)
               for name, cells in PARQUET_COLUMNS.items()}
    table = pa.table({name: pa.array(
        [c.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
         if isinstance(c, str) else c for c in values],
        type=pa.float64() if name == "amount" else pa.int64() if name == "ts"
        else pa.string()) for name, values in columns.items()})
    pq.write_table(table, path)
    summary, used, dead = _parse(path)
    assert summary.rows_in == size
    for letter in dead:
        if letter["reason"] == "bad_number":  # a Parquet double: inf/nan, or over the limit
            assert ("is not a finite number" in letter["detail"]
                    or "exceeds the limit" in letter["detail"]), letter
