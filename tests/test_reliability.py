"""Nothing lost, nothing doubled: output folders, times, numbers, duplicates, labels, CLI errors.

Each test reproduces one way a hostile or unlucky user could lose or double data without a
word, and checks that it now gives a count, a dead letter or one error line instead.
"""

import glob
import json
import os

import pytest

from autorisk_tf.data import fileio, output_folder
from beam import features
from beam import preprocess as job

SCHEMA = """\
key: user_id
timestamp: {column: ts, format: iso8601}
fields:
  - {name: event_type, kind: categorical, min_count: 1}
  - {name: amount, kind: numeric, num_buckets: 4}
"""


def _events(num_users=30, per_user=3):
    rows = ["user_id,ts,event_type,amount"]
    for u in range(num_users):
        for e in range(per_user):
            rows.append(f"u{u},2026-01-0{e + 1}T10:00:00,{'pay' if e % 2 else 'logon'},{u + e}")
    return "\n".join(rows) + "\n"


@pytest.fixture
def inputs(tmp_path):
    """Writes a small event table and schema; returns `argv(out, *extra)` for beam jobs."""
    (tmp_path / "events.csv").write_text(_events(), encoding="utf-8")
    (tmp_path / "schema.yaml").write_text(SCHEMA, encoding="utf-8")

    def argv(out, *extra):
        return ["--input", str(tmp_path / "events.csv"), "--schema",
                str(tmp_path / "schema.yaml"), "--output_dir", str(out), *extra]

    return argv


def _keys(data, split="train"):
    from autorisk_tf.data import reader
    from autorisk_tf.data.artifacts import Artifacts

    schema = Artifacts.load(f"{data}/artifacts").schema
    return [s["key"] for s in reader.read_sequences(fileio.split_pattern(str(data), split),
                                                      schema)]


def test_preprocess_refuses_a_used_output_folder_and_overwrite_replaces_it(
        tmp_path, inputs, capsys):
    out = tmp_path / "out"
    job.run(inputs(out, "--num_shards", "8", "--split", "1,0,0"))
    assert len(glob.glob(f"{out}/train/*.tfrecord")) == 8
    assert job.main(inputs(out, "--num_shards", "2", "--split", "1,0,0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a finished run" in err[0] and "--overwrite" in err[0]
    assert len(glob.glob(f"{out}/train/*.tfrecord")) == 8  # the old run is untouched
    job.run(inputs(out, "--num_shards", "2", "--split", "1,0,0", "--overwrite"))
    assert len(glob.glob(f"{out}/train/*.tfrecord")) == 2
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 30  # every user once
    manifest = output_folder.read_manifest(str(out))["files"]
    assert "artifacts/stats.json" in manifest and all(
        len(f["sha256"]) == 64 for f in manifest.values())


def test_readers_refuse_stale_shards_and_folders_without_a_manifest(tmp_path, inputs):
    out = tmp_path / "out"
    job.run(inputs(out, "--num_shards", "2", "--split", "1,0,0"))
    stale = out / "train" / "part-00000-of-00008.tfrecord"
    stale.write_bytes((out / "train" / "part-00000-of-00002.tfrecord").read_bytes())
    with pytest.raises(output_folder.OutputFolderError, match="1 file.*not listed"):
        fileio.split_pattern(str(out), "train")
    stale.unlink()
    assert len(_keys(out)) == 30
    os.remove(out / output_folder.MANIFEST)
    with pytest.raises(output_folder.OutputFolderError, match="no _SUCCESS manifest"):
        fileio.split_pattern(str(out), "train")


def test_a_killed_overwrite_keeps_the_old_run_whole(tmp_path, inputs, monkeypatch):
    out = tmp_path / "out"
    job.run(inputs(out, "--num_shards", "3", "--split", "1,0,0"))
    before = output_folder.read_manifest(str(out))

    def killed(staging, output_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(job.output_folder, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        job.run(inputs(out, "--num_shards", "2", "--split", "1,0,0", "--overwrite"))
    monkeypatch.undo()
    assert os.path.isdir(output_folder.staging_folder(str(out)))  # the new run's leftovers
    assert output_folder.read_manifest(str(out)) == before
    assert len(_keys(out)) == 30 and len(glob.glob(f"{out}/train/*.tfrecord")) == 3
    job.run(inputs(out, "--num_shards", "2", "--split", "1,0,0", "--overwrite"))
    assert not os.path.exists(output_folder.staging_folder(str(out)))
    assert len(_keys(out)) == 30 and len(glob.glob(f"{out}/train/*.tfrecord")) == 2


def test_output_dir_that_is_a_file_is_one_line(tmp_path, inputs, capsys):
    path = tmp_path / "a_file"
    path.write_text("x")
    assert job.main(inputs(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --output_dir {path} is a file, not a folder"]


def test_features_refuse_a_used_folder_and_readers_refuse_extra_tables(tmp_path, inputs, capsys):
    from autorisk_tf import evaluate

    out = tmp_path / "feats"
    features.run(inputs(out))
    assert features.main(inputs(out)) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    keys, _, _ = evaluate.load_features(str(out))
    assert len(keys) == 30
    (table,) = glob.glob(f"{out}/features-*.parquet")
    with open(table, "rb") as f:
        (out / "features-00000-of-00009.parquet").write_bytes(f.read())
    with pytest.raises(output_folder.OutputFolderError, match="not listed"):
        evaluate.load_features(str(out))
    features.run(inputs(out, "--overwrite"))
    keys, _, _ = evaluate.load_features(str(out))
    assert len(keys) == len(set(keys)) == 30


def test_cli_readers_refuse_an_unfinished_folder_in_one_line(tmp_path, inputs):
    import subprocess
    import sys

    out = tmp_path / "out"
    job.run(inputs(out, "--split", "1,0,0"))
    os.remove(out / output_folder.MANIFEST)
    result = subprocess.run(
        [sys.executable, "-m", "autorisk_tf.train", "--data", str(out), "--model_dir",
         str(tmp_path / "model"), "--steps", "1"], capture_output=True, text=True)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no _SUCCESS manifest" in lines[0]
    assert "Traceback" not in result.stderr


def _run_table(tmp_path, table, schema=SCHEMA, *extra):
    """Runs beam.preprocess on one CSV table; returns `(stats, dead letters)`."""
    root = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    root.mkdir()
    (root / "events.csv").write_text(table, encoding="utf-8")
    (root / "schema.yaml").write_text(schema, encoding="utf-8")
    stats = job.run(["--input", str(root / "events.csv"), "--schema", str(root / "schema.yaml"),
                     "--output_dir", str(root / "out"), "--split", "1,0,0", *extra])
    letters = [json.loads(line) for path in sorted(glob.glob(f"{root}/out/dead_letter/*.jsonl"))
               for line in open(path, encoding="utf-8")]
    return stats, letters, root / "out"


def test_a_far_future_or_ancient_timestamp_is_a_dead_letter_not_the_reference_time(tmp_path):
    table = ("user_id,ts,event_type,amount\n"
             "u1,2026-01-01T10:00:00,pay,1\nu1,9999-12-31T00:00:00,pay,2\n"
             "u2,2026-01-02T10:00:00,pay,3\nu2,1969-07-20T20:17:00,pay,4\n")
    stats, letters, _ = _run_table(tmp_path, table)
    assert stats["rejected_by_reason"] == {"implausible_timestamp": 2}
    assert stats["rows_used"] == 2 and stats["reconciled"]
    assert stats["reference_time_ms"] == 1767348000000  # 2026-01-02T10:00:00, not 9999
    assert {letter["line"] for letter in letters} == {3, 5}
    assert "outside the plausible window 1990-01-01T00:00:00" in letters[0]["detail"]
    # the window is configurable
    stats, _, _ = _run_table(tmp_path, table, SCHEMA, "--earliest_time", "1960-01-01",
                             "--latest_time", "2026-01-01T12:00:00")
    assert stats["rejected_by_reason"] == {"implausible_timestamp": 2}  # 9999 and 2026-01-02
    assert stats["rows_used"] == 2


def test_more_implausible_times_than_allowed_fail_the_job_in_one_line(tmp_path, capsys):
    (tmp_path / "events.csv").write_text(
        "user_id,ts,event_type,amount\nu1,2026-01-01T10:00:00,pay,1\n"
        "u1,3026-01-01T10:00:00,pay,1\nu2,3026-01-01T10:00:00,pay,1\n", encoding="utf-8")
    (tmp_path / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    code = job.main(["--input", str(tmp_path / "events.csv"), "--schema",
                     str(tmp_path / "schema.yaml"), "--output_dir", str(tmp_path / "out"),
                     "--max_rejected_fraction", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: 2 of 3 event rows rejected")
    assert "implausible_timestamp: 2" in err[0]


@pytest.mark.parametrize("declared,values,found", [
    ("epoch_ms", ["1767261600", "1767265200"], "seconds"),
    ("epoch_s", ["1767261600000", "1767265200000"], "milliseconds")])
def test_epoch_numbers_in_the_other_unit_fail_before_anything_is_written(
        tmp_path, capsys, declared, values, found):
    schema = SCHEMA.replace("format: iso8601", f"format: {declared}")
    (tmp_path / "events.csv").write_text(
        "user_id,ts,event_type,amount\n" + "".join(f"u1,{v},pay,1\n" for v in values),
        encoding="utf-8")
    (tmp_path / "schema.yaml").write_text(schema, encoding="utf-8")
    code = job.main(["--input", str(tmp_path / "events.csv"), "--schema",
                     str(tmp_path / "schema.yaml"), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"'ts' is declared {declared}" in err[0] and f"look like {found}" in err[0]
    assert not (tmp_path / "out").exists()


def test_numbers_are_plain_and_bounded_and_stripped_keys_are_counted(tmp_path):
    table = ("user_id,ts,event_type,amount\n"
             "u1,2026-01-01T10:00:00,pay,1e300\nu1,2026-01-01T11:00:00,pay,1_000\n"
             "u1,2026-01-01T12:00:00,pay,\uff11\uff12\nu1,2026-01-01T13:00:00,pay,-2.5e3\n"
             "u1,2026-01-01T14:00:00,pay,999999999999999\n"
             '" spaced ",2026-01-01T10:00:00,pay,1\nspaced,2026-01-01T10:00:00,pay,2\n')
    stats, letters, out = _run_table(tmp_path, table)
    assert stats["rejected_by_reason"] == {"bad_number": 3}
    assert sorted(letter["line"] for letter in letters) == [2, 3, 4]
    assert "exceeds the limit 1e+15" in letters[0]["detail"]
    assert stats["users"] == 2  # " spaced " is "spaced", and the merge is counted
    assert stats["keys_stripped"] == 1 and sorted(_keys(out)) == ["spaced", "u1"]
    assert "keys stripped of blanks 1" in job.summary_line(stats)
    # a per-field limit
    schema = SCHEMA.replace("num_buckets: 4}", "num_buckets: 4, max_abs: 1e3}")
    stats, _, _ = _run_table(tmp_path, table, schema)
    assert stats["rejected_by_reason"] == {"bad_number": 5}


DUPLICATED = ("user_id,ts,event_type,amount\n"
              "u1,2026-01-01T10:00:00,pay,5\nu1,2026-01-01T10:00:00,pay,5\n"
              "u1,2026-01-01T10:00:00,pay,6\nu1,2026-01-01T10:00:00,pay,\n"
              "u1,2026-01-01T10:00:00,pay,\nu2,2026-01-01T10:00:00,pay,5\n"
              "u2,2026-01-02T10:00:00,pay,5\n")


def test_duplicate_events_are_counted_and_dropped_on_request(tmp_path, capsys):
    stats, _, out = _run_table(tmp_path, DUPLICATED)
    # u1's second "pay 5" and second missing amount; u2's are a day apart
    assert stats["duplicate_events"] == 2 and stats["rows_used"] == 7
    assert stats["rejected_by_reason"] == {}
    stats, _, out = _run_table(tmp_path, DUPLICATED, SCHEMA, "--drop_duplicate_events")
    assert stats["duplicate_events"] == 2 and stats["rows_used"] == 5
    assert stats["rejected_by_reason"] == {"duplicate_event": 2} and stats["reconciled"]
    line = job.summary_line(stats)
    assert "rejected 2 (duplicate_event: 2);" in line and "duplicate events 2 (dropped)" in line


LABEL_SCHEMA = SCHEMA + """\
labels:
  columns:
    - {name: is_risk, kind: binary}
    - {name: spend, kind: numeric}
"""


def test_a_bad_label_cell_loses_that_label_only(tmp_path):
    from autorisk_tf.data import reader
    from autorisk_tf.data.artifacts import Artifacts

    (tmp_path / "events.csv").write_text(_events(num_users=3), encoding="utf-8")
    (tmp_path / "labels.csv").write_text("user_id,is_risk,spend\nu0,1,12.5\nu1,7,3\n"
                                         "u2,0,abc\n", encoding="utf-8")
    (tmp_path / "schema.yaml").write_text(LABEL_SCHEMA, encoding="utf-8")
    out = tmp_path / "out"
    stats = job.run(["--input", str(tmp_path / "events.csv"), "--schema",
                     str(tmp_path / "schema.yaml"), "--labels", str(tmp_path / "labels.csv"),
                     "--output_dir", str(out), "--split", "1,0,0"])
    labels = stats["labels"]
    assert labels["rows_used"] == 3 and labels["rows_rejected"] == 0 and labels["reconciled"]
    assert labels["cells_rejected"] == 2
    assert labels["cells_rejected_by_label"] == {"is_risk": 1, "spend": 1}
    schema = Artifacts.load(f"{out}/artifacts").schema
    rows = {s["key"]: s for s in reader.read_sequences(fileio.split_pattern(str(out), "train"),
                                                       schema)}
    assert rows["u0"]["label/is_risk"] == 1.0 and rows["u0"]["label/spend"] == 12.5
    assert rows["u1"]["label/is_risk"] != rows["u1"]["label/is_risk"]  # NaN: missing
    assert rows["u1"]["label/spend"] == 3.0
    assert rows["u2"]["label/is_risk"] == 0.0
    assert rows["u2"]["label/spend"] != rows["u2"]["label/spend"]
    letters = [json.loads(line) for path in glob.glob(f"{out}/dead_letter/*.jsonl")
               for line in open(path, encoding="utf-8")]
    assert sorted((letter["source"], letter["line"], letter["reason"]) for letter in letters) == [
        ("label_cell", 3, "bad_label"), ("label_cell", 4, "bad_label")]
    assert "label cells rejected 2 (is_risk: 1, spend: 1)" in job.summary_line(stats)


@pytest.mark.parametrize("amount,time_ms", [
    (float("inf"), 1767261600000), (1e300, 1767261600000), (True, 1767261600000),
    (12.5, 253402214400000), (12.5, 315532800000 - 1)])
def test_rest_and_beam_reject_the_same_values(amount, time_ms):
    """A value that is a dead letter in beam.preprocess is a 400 in export.serve."""
    import types

    from autorisk_tf.data import events
    from autorisk_tf.data.schema import parse_schema
    from export import serve

    schema = parse_schema(SCHEMA.replace("format: iso8601", "format: epoch_ms"))
    parser = events.RowParser(schema)
    with pytest.raises(events.RejectedRow) as batch:
        parser.parse({"user_id": "u1", "ts": time_ms, "event_type": "pay", "amount": amount})
    served = types.SimpleNamespace(parser=parser, inputs={"serving_default": {
        "event_type": ("string", 2), "amount": ("float", 2), "timestamp_ms": ("int", 2),
        "length": ("int", 1)}})
    body = json.loads(json.dumps({"instances": [
        {"event_type": ["pay", "pay"], "amount": [1.0, amount],
         "timestamp_ms": [1767261600000, time_ms], "length": 2}]}))
    with pytest.raises(serve.BadRequest, match=f"{batch.value.reason}|true or false") as online:
        serve.parse_request(body, served, serve.Limits())
    assert "user 0 event 1" in str(online.value) or "true or false" in str(online.value)
    served.parser.window = (0, 1)  # a window fixed when the server started moves with now
    with pytest.raises(serve.BadRequest, match=f"{batch.value.reason}|true or false"):
        serve.parse_request(body, served, serve.Limits())
    if amount is not True:  # (a boolean is refused before the values are checked)
        assert served.parser.window[1] > 1767261600000
    # the same request with good values passes, and padding past `length` is not checked
    body["instances"][0].update(amount=[1.0, 2.0], timestamp_ms=[1767261600000] * 2)
    assert serve.parse_request(body, served, serve.Limits())[1]["amount"].shape == (1, 2)
    body["instances"][0].update(amount=[1.0, amount], timestamp_ms=[1767261600000, time_ms],
                                length=1)
    if amount is not True:  # a boolean is never a number, padding or not
        serve.parse_request(body, served, serve.Limits())


@pytest.fixture(scope="module")
def few_labels(tmp_path_factory):
    """A data folder where one user is labelled, and a tiny model trained on it."""
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer, load_config

    root = tmp_path_factory.mktemp("few_labels")
    (root / "events.csv").write_text(_events(num_users=40, per_user=4), encoding="utf-8")
    (root / "labels.csv").write_text("user_id,is_risk,spend\nu0,1,2\n", encoding="utf-8")
    (root / "schema.yaml").write_text(LABEL_SCHEMA, encoding="utf-8")
    job.run(["--input", str(root / "events.csv"), "--schema", str(root / "schema.yaml"),
             "--labels", str(root / "labels.csv"), "--output_dir", str(root / "data")])
    config = load_config(None, {
        "model.width": 8, "model.num_blocks": 1, "model.ffn_dim": 16, "model.block_size": 4,
        "model.num_heads": 1, "model.num_global": 1, "model.field_dim": 4,
        "input.batch_size": 4, "input.bucket_boundaries": [8], "training.steps": 1,
        "training.warmup_steps": 1})
    Pretrainer(Artifacts.load(f"{root}/data/artifacts"), config, str(root / "model")).fit(
        fileio.split_pattern(str(root / "data"), "train"), verbose=0)
    return root


def _cli_cases(root):
    from tests.conftest import free_ports

    (root / "a_file").write_text("x")
    (root / "broken.yaml").write_text("model: {width: [\n")
    (root / "bom.csv").write_bytes(b"\xef\xbb\xbf" + _events(num_users=2).encode())
    (port,) = free_ports(1)
    dead = f"http://127.0.0.1:{port}"
    train = ["autorisk_tf.train", "--data", f"{root}/data", "--model_dir", f"{root}/m2"]
    client = ["export.client", "--schema", f"{root}/schema.yaml", "--url", dead]
    return {
        "batch_size 0": (train + ["--batch_size", "0"], "input.batch_size must be at least 1"),
        "steps -5": (train + ["--steps", "-5"], "training.steps must be at least 0"),
        "model_dir a file": (train[:-1] + [f"{root}/a_file"], "is a file"),
        "broken yaml": (train + ["--config", f"{root}/broken.yaml"], "not valid YAML"),
        "width abc": (train + ["--set", "model.width=abc"], "model.width must be int"),
        "finetune, no labelled validation user": (
            ["autorisk_tf.finetune", "--model_dir", f"{root}/model", "--data",
             f"{root}/data", "--label", "is_risk", "--output_dir", f"{root}/clf"],
            "has label 'is_risk'"),
        "evaluate, no labelled test user": (
            ["autorisk_tf.evaluate", "--model_dir", f"{root}/model", "--data", f"{root}/data"],
            "an AUC needs users of both classes"),
        "client, server down": (client + ["--input", f"{root}/events.csv"],
                                f"cannot reach {dead}"),
        "client, unknown user": (client + ["--input", f"{root}/events.csv", "--users", "u99"],
                                 "no rows in"),
        "client, CSV with a BOM": (client + ["--input", f"{root}/bom.csv"],
                                   f"cannot reach {dead}"),  # read fine, then no server
    }


def test_every_cli_error_is_one_line_and_a_nonzero_exit(few_labels):
    import concurrent.futures
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def call(args):
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                              env=env, cwd=os.path.dirname(os.path.dirname(__file__)),
                              timeout=300)

    cases = _cli_cases(few_labels)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = dict(zip(cases, pool.map(call, [args for args, _ in cases.values()]),
                           strict=True))
    for name, (_, expected) in cases.items():
        result = results[name]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode in (1, 2), (name, result.returncode, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert len(errors) == 1 and expected in errors[0], (name, result.stderr[-2000:])


def test_serve_on_a_port_in_use_is_one_line(monkeypatch, capsys, tmp_path):
    import socket
    import types

    from export import serve

    class Registry:
        current = types.SimpleNamespace(version=1)

        def __init__(self, base, name):
            pass

        def refresh(self):
            return False

    monkeypatch.setattr(serve, "ModelRegistry", Registry)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = serve.main(["--model_base_path", str(tmp_path), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_shards_named_by_a_glob_are_checked_against_the_manifest(tmp_path, inputs):
    out = tmp_path / "out"
    job.run(inputs(out, "--num_shards", "2", "--split", "1,0,0"))
    shards = sorted(glob.glob(f"{out}/train/*.tfrecord"))
    output_folder.check_shards(shards)  # the run as written: fine
    output_folder.check_shards([str(tmp_path / "elsewhere" / "x.tfrecord")])  # not a job's
    (out / "train" / "part-00000-of-00008.tfrecord").write_bytes(b"")
    with pytest.raises(output_folder.OutputFolderError, match="not listed"):
        output_folder.check_shards(shards)
