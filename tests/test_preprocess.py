import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from beam import preprocess as job

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z (Thursday), epoch seconds

# Rows are deliberately out of order; u1 has a tie at T0+60 (input order must be kept).
EVENTS_CSV = f"""user_id,ts,event_type,amount,item
u1,{T0 + 60},pay,10.5,滴滴 ride
u2,{T0 + 5},logon,,
u1,{T0},logon,,
u1,{T0 + 60},transfer,200,Bus ticket
u1,{T0 + 3600},pay,,Bus ticket
u2,{T0 + 86400},refund,3,
u3,{T0},pay,1000,
"""
LABELS_CSV = "user_id,is_risk,band\nu1,1,young\nu2,0,\nu9,1,old\n"


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    from tests.conftest import SCHEMA, Run

    root = tmp_path_factory.mktemp("basic")
    (root / "events.csv").write_text(EVENTS_CSV, encoding="utf-8")
    (root / "labels.csv").write_text(LABELS_CSV, encoding="utf-8")
    (root / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    job.run(["--input", str(root / "events.csv"), "--schema", str(root / "schema.yaml"),
             "--labels", str(root / "labels.csv"), "--output_dir", str(root / "out"),
             "--split", "1,0,0"])
    return Run(str(root / "out"), str(root / "schema.yaml"))


def test_round_trip_order_ties_missing_and_time_features(basic):
    u1 = basic.one("u1")
    assert u1["length"] == 4 and u1["num_events_total"] == 4
    assert list(u1["event/event_type"]) == ["logon", "pay", "transfer", "pay"]
    np.testing.assert_array_equal(
        u1["time/timestamp_ms"], np.array([T0, T0 + 60, T0 + 60, T0 + 3600]) * 1000)
    amounts = u1["event/amount"]
    assert math.isnan(amounts[0]) and math.isnan(amounts[3])
    np.testing.assert_allclose(amounts[1:3], [10.5, 200.0])
    assert list(u1["event/item"]) == ["", "滴滴 ride", "Bus ticket", "Bus ticket"]
    delta = u1["time/delta_seconds"]
    assert math.isnan(delta[0])
    np.testing.assert_allclose(delta[1:], [60.0, 0.0, 3540.0])
    np.testing.assert_array_equal(u1["time/hour"], [0, 0, 0, 1])
    np.testing.assert_array_equal(u1["time/day_of_week"], [3, 3, 3, 3])
    assert u1["first_timestamp_ms"] == T0 * 1000 and u1["last_timestamp_ms"] == (T0 + 3600) * 1000


def test_records_of_some_keys_are_read_by_their_key(basic):
    from autorisk_tf.data import reader
    from autorisk_tf.data import sequence_example as seqex

    records = reader.records(f"{basic.output_dir}/train/*.tfrecord")
    kept = [reader.parse_example(r, basic.artifacts.schema)[seqex.KEY].numpy().decode()
            for r in reader.of_keys(records, {"u3", "u1", "nobody"})]
    assert sorted(kept) == ["u1", "u3"]
    assert list(reader.of_keys(records, set())) == []


def test_labels_are_joined_and_counted(basic):
    assert basic.one("u1")["label/is_risk"] == 1.0 and basic.one("u1")["label/band"] == "young"
    assert basic.one("u2")["label/is_risk"] == 0.0 and basic.one("u2")["label/band"] == ""
    assert math.isnan(basic.one("u3")["label/is_risk"])  # no label row
    labels = basic.stats["labels"]
    assert (labels["rows_in"], labels["rows_used"], labels["rows_without_events"],
            labels["users_without_labels"], labels["reconciled"]) == (3, 2, 1, 1, True)


def test_vocabularies_boundaries_and_stats(basic):
    art = basic.artifacts
    # max_vocab 3: pay (3) first, then ties at 1 by value; "transfer" is cut.
    assert art.vocabularies["event_type"] == [("pay", 3), ("logon", 2), ("refund", 1)]
    assert art.boundaries["amount"] == [8.625, 105.25, 400.0]  # quantiles of 3,10.5,200,1000
    tokens = dict(art.text_vocabularies["item"])
    assert tokens["滴"] == 2 and tokens["B"] == 2 and tokens[" "] == 3
    assert basic.stats["rows_in"] == 7 and basic.stats["rows_used"] == 7
    assert basic.stats["users_by_split"] == {"train": 3, "valid": 0, "test": 0}
    assert basic.stats["history_length"]["max"] == 4
    assert art.schema.field_names == ("event_type", "amount", "item")


def test_truncation_keeps_most_recent(preprocess):
    rows = "\n".join(f"u1,{T0 + i},e{i},{i},x" for i in range(10))
    run = preprocess({"e.csv": "user_id,ts,event_type,amount,item\n" + rows + "\n"},
                     args=["--max_len", "4", "--split", "1,0,0"])
    u1 = run.one("u1")
    assert list(u1["event/event_type"]) == ["e6", "e7", "e8", "e9"]
    assert u1["num_events_total"] == 10
    np.testing.assert_allclose(u1["time/delta_seconds"], [1.0, 1.0, 1.0, 1.0])  # from full history
    assert (run.stats["rows_used"], run.stats["rows_truncated"]) == (4, 6)
    assert run.stats["reconciled"]


def test_windows_overlap_and_cover_history(preprocess):
    rows = "\n".join(f"u1,{T0 + i},e{i},{i},x" for i in range(10))
    run = preprocess({"e.csv": "user_id,ts,event_type,amount,item\n" + rows + "\n"},
                     args=["--max_len", "4", "--window_stride", "3", "--split", "1,0,0"])
    windows = run.examples["u1"]
    got = [[int(a) for a in w["event/amount"]] for w in windows]
    assert got == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert [w["window_index"] for w in windows] == [0, 1, 2]
    assert (run.stats["rows_used"], run.stats["rows_truncated"]) == (10, 0)
    assert run.stats["examples_by_split"]["train"] == 3


def test_window_slices():
    assert job.window_slices(3, 4, 0) == [(0, 3)]
    assert job.window_slices(10, 4, 0) == [(6, 10)]
    assert job.window_slices(10, 4, 4) == [(0, 4), (4, 8), (6, 10)]
    assert job.window_slices(9, 4, 5) == [(0, 4), (5, 9)]


BAD_CSV = (
    b"user_id,ts,event_type,amount,item\n"
    b"u1,1767225600,pay,1,ok\n"
    b",1767225600,pay,1,no key\n"
    b"u1,,pay,1,no time\n"
    b"u1,tomorrow,pay,1,bad time\n"
    b"u1,1767225600,pay,12abc,bad number\n"
    b"u1,1767225600,pay\n"
    b"u1,1767225600,pay,1,bad \xff\xfe utf8\n"
    b"\n"
    b"u2,1767225601,pay,2,\"quoted, with comma\"\n"
)


def test_dead_letters_name_every_reason_and_reconcile(preprocess):
    run = preprocess({"events.csv": BAD_CSV}, args=["--split", "1,0,0"])
    reasons = sorted(d["reason"] for d in run.dead_letters)
    assert reasons == ["bad_number", "bad_timestamp", "invalid_utf8", "missing_key",
                       "missing_timestamp", "wrong_column_count"]
    by_reason = {d["reason"]: d for d in run.dead_letters}
    assert by_reason["bad_number"]["raw"] == "u1,1767225600,pay,12abc,bad number"
    assert by_reason["bad_number"]["line"] == 6 and "amount" in by_reason["bad_number"]["detail"]
    assert by_reason["invalid_utf8"]["line"] == 8 and "\\xff" in by_reason["invalid_utf8"]["raw"]
    assert by_reason["wrong_column_count"]["detail"] == "3 columns, the header has 5"
    stats = run.stats
    assert (stats["rows_in"], stats["rows_used"], stats["rows_rejected"]) == (8, 2, 6)
    assert stats["blank_lines_skipped"] == 1
    assert stats["rejected_by_reason"] == {r: 1 for r in reasons}
    assert run.one("u2")["event/item"][0] == "quoted, with comma"


def test_jsonl_and_parquet_give_the_same_sequences(preprocess):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"user_id": "u1", "ts": T0 + 5, "event_type": "pay", "amount": 1.5, "item": "a"},
            {"user_id": "u1", "ts": T0, "event_type": "logon", "amount": None, "item": None}]
    jsonl = "\n".join(json.dumps(r) for r in rows) + "\n[1, 2]\n{not json\n"
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    csv_text = "user_id,ts,event_type,amount,item\n" + "".join(
        f"u1,{r['ts']},{r['event_type']},{r['amount'] or ''},{r['item'] or ''}\n" for r in rows)
    results = [preprocess({name: content}, args=["--split", "1,0,0"]) for name, content in
               (("e.jsonl", jsonl), ("e.parquet", buffer.getvalue()), ("e.csv", csv_text))]
    reference = results[2].one("u1")
    for run in results[:2]:
        example = run.one("u1")
        assert list(example["event/event_type"]) == ["logon", "pay"]
        for name in ("event/item", "time/timestamp_ms", "time/hour"):
            np.testing.assert_array_equal(example[name], reference[name])
        np.testing.assert_array_equal(example["event/amount"], reference["event/amount"])
    assert sorted(d["reason"] for d in results[0].dead_letters) == ["malformed_json"] * 2
    assert results[0].stats["rows_in"] == 4 and results[0].stats["reconciled"]


def test_simulated_user_round_trips_under_multi_process_runner(tmp_path):
    from autorisk_tf import simulate
    from autorisk_tf.data import reader
    from autorisk_tf.data.artifacts import Artifacts

    summary = simulate.write_dataset(str(tmp_path / "sim"), seed=5, num_users=60,
                                     num_shards=3, block_users=16)
    out = tmp_path / "out"
    stats = job.run(["--input", str(tmp_path / "sim" / "events" / "*.csv"),
                     "--schema", "autorisk_tf/schemas/simulated.yaml",
                     "--labels", str(tmp_path / "sim" / "labels.csv"),
                     "--output_dir", str(out), "--direct_running_mode", "multi_processing",
                     "--direct_num_workers", "2"])
    assert stats["rows_in"] == summary["events"] == stats["rows_used"]
    assert stats["users"] == 60 and stats["labels"]["rows_used"] == 60
    schema = Artifacts.load(str(out / "artifacts")).schema
    examples = {ex["key"]: ex for split in ("train", "valid", "test")
                for ex in reader.read_sequences(str(out / split / "*.tfrecord"), schema)}
    assert len(examples) == 60
    for index in (0, 17, 42):
        user = simulate.simulate_user(5, index)
        ex = examples[user.user_id]
        np.testing.assert_array_equal(ex["time/timestamp_ms"], user.times_ms // 1000 * 1000)
        for name in ("event_type", "channel", "device", "pay_method", "item"):
            assert list(ex[f"event/{name}"]) == getattr(user, name), name
        expected = np.array([np.nan if a is None else a for a in user.amount], np.float32)
        np.testing.assert_allclose(ex["event/amount"], expected, rtol=1e-6)
        assert ex["label/is_risk"] == user.labels["is_risk"]
        assert ex["label/profile"] == user.labels["profile"]


def test_file_shuffle_equals_beam_shuffle_and_cleans_up(tmp_path):
    """The bounded-memory `files` shuffle writes exactly what Beam's GroupByKey does."""
    from autorisk_tf import simulate
    from tests.conftest import SIMULATED_SCHEMA, Run

    simulate.write_dataset(str(tmp_path / "sim"), seed=9, num_users=80, num_shards=3,
                           block_users=16)
    with open(tmp_path / "sim" / "labels.csv", "a", encoding="utf-8") as f:
        f.write("u00000003,1,0,young,games,ordinary\n")  # a duplicate label row
    runs = {}
    for shuffle, extra in (("beam", []), ("files", ["--shuffle_partitions", "5"])):
        out = tmp_path / shuffle
        job.run(["--input", str(tmp_path / "sim" / "events" / "*.csv"),
                 "--schema", SIMULATED_SCHEMA, "--labels", str(tmp_path / "sim" / "labels.csv"),
                 "--output_dir", str(out), "--max_len", "50", "--shuffle", shuffle, *extra])
        assert sorted(p.name for p in out.iterdir()) == [
            "_SUCCESS", "artifacts", "dead_letter", "test", "train", "valid"]  # no _shuffle_tmp
        runs[shuffle] = Run(str(out), SIMULATED_SCHEMA)
    beam_run, files_run = runs["beam"], runs["files"]
    assert files_run.examples.keys() == beam_run.examples.keys()
    assert len(files_run.examples) == 80
    for key, windows in beam_run.examples.items():
        for want, got in zip(windows, files_run.examples[key], strict=True):
            assert want.keys() == got.keys()
            for name, value in want.items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"{key} {name}")
    drop = ("options",)
    assert {k: v for k, v in files_run.stats.items() if k not in drop} == \
        {k: v for k, v in beam_run.stats.items() if k not in drop}
    assert files_run.stats["labels"]["rejected_by_reason"] == {"duplicate_label_key": 1}
    assert [d["reason"] for d in files_run.dead_letters] == ["duplicate_label_key"]
    assert files_run.artifacts.vocabularies == beam_run.artifacts.vocabularies
    assert files_run.artifacts.boundaries == beam_run.artifacts.boundaries


def test_local_runs_use_one_worker_process_per_core_for_large_inputs(tmp_path, monkeypatch):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small.write_bytes(b"x" * 100)
    large.write_bytes(b"x" * 200)
    monkeypatch.setattr(job, "PARALLEL_INPUT_BYTES", 150)
    monkeypatch.setattr(job.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert job.local_runner_args([], [str(small)]) == [f"--runner={job.LOCAL_RUNNER}"]
    assert job.local_runner_args(["--x=1"], [str(small), str(large)]) == [
        f"--runner={job.LOCAL_RUNNER}", "--x=1", "--direct_running_mode=multi_processing",
        "--direct_num_workers=4"]
    assert job.local_runner_args([], [str(large)])[-1] == "--direct_num_workers=2"  # 2 a file
    chosen = ["--direct_num_workers=1"]
    assert job.local_runner_args(chosen, [str(small), str(large)]) == [
        f"--runner={job.LOCAL_RUNNER}", *chosen]
    assert job.local_runner_args(["--runner=DataflowRunner"], [str(large)]) == [
        "--runner=DataflowRunner"]
    monkeypatch.setattr(job.os, "sched_getaffinity", lambda pid: {0})
    assert job.local_runner_args([], [str(small), str(large)]) == [
        f"--runner={job.LOCAL_RUNNER}"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "beam.preprocess", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_errors_are_one_clear_line(tmp_path):
    missing = _cli("--input", str(tmp_path / "nothing*.csv"), "--schema",
                   "autorisk_tf/schemas/simulated.yaml", "--output_dir", str(tmp_path / "o"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: input '{tmp_path / 'nothing*.csv'}' matches no file")
    (tmp_path / "bad.yaml").write_text("key: k\ntimestamp: {column: t}\nfields:\n"
                                       "  - {name: a, kind: money}\n")
    (tmp_path / "e.csv").write_text("k,t,a\n")
    bad = _cli("--input", str(tmp_path / "e.csv"), "--schema", str(tmp_path / "bad.yaml"),
               "--output_dir", str(tmp_path / "o"))
    assert bad.returncode == 2
    assert "bad.yaml:4: fields[0].kind: unknown value 'money'" in bad.stderr.splitlines()[-1]
    split = _cli("--input", str(tmp_path / "e.csv"), "--schema", str(tmp_path / "bad.yaml"),
                 "--output_dir", str(tmp_path / "o"), "--split", "0.5,0.6,0")
    assert split.returncode == 2 and "--split must be three fractions" in split.stderr


@pytest.mark.parametrize("shuffle", ["beam", "files"])
def test_duplicate_labels_across_files_first_file_wins_and_both_places_are_named(
        tmp_path, shuffle):
    """The same key on the same line of two label files: no crash, a defined winner."""
    from tests.conftest import SCHEMA, Run

    (tmp_path / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "events.csv").write_text(
        "user_id,ts,event_type,amount,item\nu1,1767225600,logon,1,a\nu2,1767225660,pay,2,b\n",
        encoding="utf-8")
    (tmp_path / "labels").mkdir()
    for name, is_risk in (("b.csv", 0), ("a.csv", 1)):  # written out of name order
        (tmp_path / "labels" / name).write_text(
            f"user_id,is_risk,band\nu1,{is_risk},x\nu2,0,y\n", encoding="utf-8")
    job.run(["--input", str(tmp_path / "events.csv"), "--schema", str(tmp_path / "schema.yaml"),
             "--labels", str(tmp_path / "labels" / "*.csv"), "--output_dir",
             str(tmp_path / "out"), "--shuffle", shuffle])
    run = Run(str(tmp_path / "out"), str(tmp_path / "schema.yaml"))
    assert run.one("u1")["label/is_risk"] == 1.0  # a.csv comes first
    dead = sorted(run.dead_letters, key=lambda d: d["raw"])
    assert [(d["reason"], os.path.basename(d["file"]), d["line"]) for d in dead] == [
        ("duplicate_label_key", "b.csv", 2), ("duplicate_label_key", "b.csv", 3)]
    assert dead[0]["detail"] == (f"key 'u1' already has labels at "
                                 f"{tmp_path / 'labels' / 'a.csv'} line 2 (the first by file, "
                                 "then line, wins)")
    assert run.stats["labels"]["rejected_by_reason"] == {"duplicate_label_key": 2}


def test_label_files_have_their_own_format_and_delimiter(tmp_path):
    """Semicolon-separated labels in a .txt file next to comma-separated events."""
    from tests.conftest import SCHEMA, Run

    (tmp_path / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "events.csv").write_text(
        "user_id,ts,event_type,amount,item\nu1,1767225600,logon,1,a\n", encoding="utf-8")
    (tmp_path / "labels.txt").write_text("user_id;is_risk;band\nu1;1;x\n", encoding="utf-8")
    job.run(["--input", str(tmp_path / "events.csv"), "--schema", str(tmp_path / "schema.yaml"),
             "--labels", str(tmp_path / "labels.txt"), "--labels_format", "csv",
             "--labels_delimiter", ";", "--output_dir", str(tmp_path / "out")])
    example = Run(str(tmp_path / "out"), str(tmp_path / "schema.yaml")).one("u1")
    assert example["label/is_risk"] == 1.0 and example["label/band"] == "x"


def test_a_lone_surrogate_from_a_json_escape_is_a_dead_letter_not_a_crash(preprocess):
    rows = [{"user_id": "u1", "item": "ok"}, {"user_id": "u1", "item": "bad \\ud800"},
            {"user_id": "u\\udfff", "item": ""}, {"user_id": "u2", "item": "\\ud83d\\ude00"}]
    rows = [f'{{"user_id": "{row["user_id"]}", "ts": {1767225600 + i}, "event_type": "pay", '
            f'"amount": 1, "item": "{row["item"]}"}}' for i, row in enumerate(rows)]
    run = preprocess({"e.jsonl": "\n".join(rows) + "\n"},
                     args=["--split", "1,0,0", "--max_rejected_fraction", "0.9"])
    assert run.stats["rows_in"] == 4 and run.stats["rows_used"] == 2
    assert run.stats["rejected_by_reason"] == {"invalid_utf8": 2}
    assert sorted(d["line"] for d in run.dead_letters) == [2, 3]
    assert "lone surrogate" in run.dead_letters[0]["detail"]
    assert list(run.one("u2")["event/item"]) == ["😀"]  # a proper surrogate pair is kept


def test_sorted_shards_are_the_same_bytes_whichever_shuffle_wrote_them(tmp_path):
    """--sorted_shards: a fixed key-to-shard layout, keys sorted within each shard."""
    from autorisk_tf import simulate
    from autorisk_tf.data import events
    from tests.conftest import SIMULATED_SCHEMA, Run

    simulate.write_dataset(str(tmp_path / "sim"), seed=4, num_users=60, num_shards=3,
                           block_users=16)
    shards = {}
    for shuffle, extra in (("beam", []), ("files", ["--shuffle_partitions", "3"])):
        out = tmp_path / shuffle
        job.run(["--input", str(tmp_path / "sim" / "events" / "*.csv"),
                 "--schema", SIMULATED_SCHEMA, "--output_dir", str(out), "--max_len", "20",
                 "--window_stride", "20", "--num_shards", "3", "--sorted_shards",
                 "--shuffle", shuffle, *extra])
        shards[shuffle] = {f"{split}/{name}": (out / split / name).read_bytes()
                           for split in ("train", "valid", "test")
                           for name in sorted(os.listdir(out / split))}
        run = Run(str(out), SIMULATED_SCHEMA)
    assert shards["beam"] == shards["files"]
    assert sorted(shards["beam"]) == [f"{split}/part-{s:05d}-of-00003.tfrecord"
                                      for split in ("test", "train", "valid") for s in range(3)]
    assert run.stats["options"]["sorted_shards"] is True
    from autorisk_tf.data.reader import read_sequences
    from autorisk_tf.data.schema import load_schema

    schema = load_schema(SIMULATED_SCHEMA)
    seen = 0
    for name in shards["beam"]:
        shard = int(name.split("part-")[1][:5])
        order = [(ex["key"], ex["window_index"])
                 for ex in read_sequences(str(tmp_path / "beam" / name), schema)]
        assert order == sorted(order)
        assert all(events.shard_of(key, 3) == shard for key, _ in order)
        seen += len(order)
    assert seen == sum(run.stats["examples_by_split"].values()) > 60  # windows of 20
    assert len({key for key in run.examples}) == 60


def test_sorted_shards_need_a_shard_count(tmp_path, capsys):
    from tests.conftest import SIMULATED_SCHEMA

    (tmp_path / "e.csv").write_text("user_id,ts\n", encoding="utf-8")
    assert job.main(["--input", str(tmp_path / "e.csv"), "--schema", SIMULATED_SCHEMA,
                     "--output_dir", str(tmp_path / "out"), "--sorted_shards"]) == 2
    assert "--sorted_shards needs --num_shards" in capsys.readouterr().err
