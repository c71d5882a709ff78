"""Columns the schema reads but a file lacks: exit 2 before any row, one line that helps."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam import features, preprocess
from tests.conftest import SCHEMA

ROWS = "u1,1767225600,logon,3.5,abc\nu2,1767225660,pay,,xy\n"


def _run(tmp_path, capsys, job, events_name, events_text, labels=None, schema=SCHEMA):
    (tmp_path / "schema.yaml").write_text(schema, encoding="utf-8")
    path = tmp_path / events_name
    if isinstance(events_text, pa.Table):
        pq.write_table(events_text, path)
    else:
        path.write_text(events_text, encoding="utf-8")
    argv = ["--input", str(path), "--schema", str(tmp_path / "schema.yaml"),
            "--output_dir", str(tmp_path / "out")]
    if labels is not None:
        (tmp_path / "labels.csv").write_text(labels, encoding="utf-8")
        argv += ["--labels", str(tmp_path / "labels.csv")]
    code = job.main(argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    return code, errors


@pytest.mark.parametrize("job", [preprocess, features])
def test_a_misspelt_field_column_names_the_file_and_a_close_match(tmp_path, capsys, job):
    code, errors = _run(tmp_path, capsys, job, "events.csv",
                        "user_id,ts,event_type,Amount,item\n" + ROWS)
    assert code == 2 and len(errors) == 1
    assert "events.csv has no column 'amount' (field 'amount')" in errors[0]
    assert "user_id, ts, event_type, Amount, item" in errors[0]
    assert "did you mean 'Amount'?" in errors[0]
    assert not os.path.exists(tmp_path / "out")  # stopped before reading a row


def test_a_key_typo_stops_before_sending_every_row_to_dead_letters(tmp_path, capsys):
    code, errors = _run(tmp_path, capsys, preprocess, "events.csv",
                        "userid,ts,event_type,amount,item\n" + ROWS)
    assert code == 2 and "no column 'user_id' (the key)" in errors[0]
    assert "did you mean 'userid'?" in errors[0]
    assert not os.path.exists(tmp_path / "out" / "dead_letter")


def test_missing_label_column_is_checked_the_same_way(tmp_path, capsys):
    code, errors = _run(tmp_path, capsys, preprocess, "events.csv",
                        "user_id,ts,event_type,amount,item\n" + ROWS,
                        labels="user_id,is_risk\nu1,1\n")
    assert code == 2 and "labels.csv has no column 'band' (label 'band')" in errors[0]
    assert "its columns are user_id, is_risk" in errors[0]


def test_parquet_and_json_lines_are_checked_from_their_schema_and_first_records(tmp_path,
                                                                              capsys):
    table = pa.table({"user_id": ["u1"], "ts": [1767225600], "event_type": ["x"],
                      "item": ["a"]})
    code, errors = _run(tmp_path, capsys, preprocess, "events.parquet", table)
    assert code == 2 and "no column 'amount' (field 'amount')" in errors[0]
    jsonl = '{"user_id": "u1", "when": 1767225600, "event_type": "x", "amount": 1, "item": ""}\n'
    code, errors = _run(tmp_path, capsys, preprocess, "events.jsonl", jsonl)
    assert code == 2 and "no column 'ts' (the timestamp)" in errors[0]
    assert "did you mean" not in errors[0]  # nothing close to 'ts'


def test_matching_columns_pass(tmp_path, capsys):
    code, errors = _run(tmp_path, capsys, preprocess, "events.csv",
                        "user_id,ts,event_type,amount,item\n" + ROWS)
    assert code == 0 and errors == []


def test_a_header_that_names_a_column_twice_is_an_error(tmp_path, capsys):
    code, errors = _run(tmp_path, capsys, preprocess, "events.csv",
                        "user_id,ts,event_type,amount,item,amount\n"
                        "u1,1767225600,logon,3.5,abc,4\n")
    assert code == 2 and len(errors) == 1
    assert "events.csv: the header names 'amount' more than once" in errors[0]


def test_a_parquet_schema_that_names_a_column_twice_is_an_error(tmp_path, capsys):
    table = pa.Table.from_arrays(
        [pa.array(["u1"]), pa.array([1767225600]), pa.array(["logon"]), pa.array([3.5]),
         pa.array(["abc"]), pa.array(["x"])],
        names=["user_id", "ts", "event_type", "amount", "item", "item"])
    code, errors = _run(tmp_path, capsys, preprocess, "events.parquet", table)
    assert code == 2 and "the header names 'item' more than once" in errors[0]


def test_an_undecodable_header_is_an_error_not_replacement_characters(tmp_path, capsys):
    (tmp_path / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "events.csv").write_bytes(b"user_id,ts,event_type,am\xffount,item\n"
                                          b"u1,1767225600,logon,3.5,abc\n")
    code = preprocess.main(["--input", str(tmp_path / "events.csv"), "--schema",
                            str(tmp_path / "schema.yaml"), "--output_dir",
                            str(tmp_path / "out")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    assert "events.csv: the header (line 1) is not valid UTF-8 at byte 24" in errors[0]
    assert "am\\xffount" in errors[0]
