"""--max_rejected_fraction: too many rejected rows, or no user written, is a failed run."""

import json
import os

from beam import preprocess
from tests.conftest import SCHEMA

HEADER = "user_id,ts,event_type,amount,item\n"
GOOD = "".join(f"u{i % 7},{1767225600 + 60 * i},logon,{i}.5,abc\n" for i in range(40))


def _main(tmp_path, capsys, rows, *args):
    (tmp_path / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "events.csv").write_text(HEADER + rows, encoding="utf-8")
    code = preprocess.main(["--input", str(tmp_path / "events.csv"), "--schema",
                            str(tmp_path / "schema.yaml"), "--output_dir",
                            str(tmp_path / "out"), *args])
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    return code, errors


def test_over_the_threshold_exits_1_with_counts_and_first_examples(tmp_path, capsys):
    bad = ("u1,not-a-time,logon,1,a\n" * 3) + "u2,1767225600,logon,1.x,a\n"
    code, errors = _main(tmp_path, capsys, GOOD + bad)
    assert code == 1 and len(errors) == 1, errors
    line = errors[0]
    assert "4 of 44 event rows rejected (9.1% > --max_rejected_fraction 0.05)" in line
    assert line.index("bad_timestamp: 3") < line.index("bad_number: 1")  # most frequent first
    assert "events.csv line 42: 'not-a-time'" in line  # the first of its reason
    assert "events.csv line 45: column 'amount': '1.x'" in line
    # The run's outputs are there to inspect.
    stats = json.loads((tmp_path / "out" / "artifacts" / "stats.json").read_text())
    assert stats["rows_rejected"] == 4 and stats["reconciled"]
    assert os.listdir(tmp_path / "out" / "dead_letter")


def test_a_higher_threshold_accepts_the_same_input(tmp_path, capsys):
    bad = ("u1,not-a-time,logon,1,a\n" * 3) + "u2,1767225600,logon,1.x,a\n"
    code, errors = _main(tmp_path, capsys, GOOD + bad, "--max_rejected_fraction", "0.1")
    assert code == 0 and errors == []


def test_every_timestamp_unparseable_never_exits_0(tmp_path, capsys):
    rows = "".join(f"u{i},yesterday,logon,1,a\n" for i in range(5))
    code, errors = _main(tmp_path, capsys, rows, "--max_rejected_fraction", "1")
    assert code == 1
    assert errors[0].startswith("error: no users written: 5 of 5 event rows rejected "
                                "(bad_timestamp: 5 (first: ")


def test_threshold_outside_0_1_is_a_usage_error(tmp_path, capsys):
    code, errors = _main(tmp_path, capsys, GOOD, "--max_rejected_fraction", "1.5")
    assert code == 2
    assert errors == ["error: --max_rejected_fraction must be between 0 and 1, got 1.5"]
