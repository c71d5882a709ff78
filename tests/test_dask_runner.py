"""The Beam jobs on a 2-worker Dask cluster (local processes) write what the local runner writes."""

import glob
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam import runners

DASK = ["--runner", "DaskRunner", "--dask_workers", "2"]


def test_runner_name_is_rewritten_to_the_completed_runner():
    assert runners.runner_args(["--runner", "DaskRunner", "--x=1"]) == [
        f"--runner={runners.RUNNER_PATH}", "--x=1"]
    assert runners.runner_args(["--runner=DaskRunner"]) == [f"--runner={runners.RUNNER_PATH}"]
    assert runners.runner_args(["--runner", "DataflowRunner"]) == ["--runner=DataflowRunner"]
    assert runners.uses_dask(runners.runner_args(["--runner=DaskRunner"]))
    assert not runners.uses_dask(["--runner=DataflowRunner"])
    with runners.dask_cluster(["--runner=DataflowRunner"], 2) as args:  # starts nothing
        assert args == ["--runner=DataflowRunner"]


def _tree(folder):
    """{relative path: bytes} of every file under a folder."""
    return {os.path.relpath(os.path.join(root, name), folder):
            open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(folder) for name in names}


def test_preprocess_on_dask_writes_the_local_runners_bytes(tmp_path):
    from autorisk_tf import simulate
    from beam import preprocess
    from tests.conftest import SIMULATED_SCHEMA

    simulate.write_dataset(str(tmp_path / "sim"), seed=4, num_users=60, num_shards=3,
                           block_users=16)
    first = sorted(glob.glob(str(tmp_path / "sim" / "events" / "*.csv")))[0]
    with open(first, "a") as f:  # two rows for the dead letters
        f.write("u_bad,not-a-time,login,,,,\n,,,\n")
    args = ["--input", str(tmp_path / "sim" / "events" / "*.csv"), "--schema",
            SIMULATED_SCHEMA, "--labels", str(tmp_path / "sim" / "labels.csv"),
            "--max_len", "20", "--window_stride", "20", "--num_shards", "3",
            "--sorted_shards", "--latest_time", "2030-01-01T00:00:00"]
    preprocess.run([*args, "--output_dir", str(tmp_path / "local")])
    assert preprocess.main([*args, "--output_dir", str(tmp_path / "dask"), *DASK]) == 0
    local, dask = _tree(tmp_path / "local"), _tree(tmp_path / "dask")
    # Records, vocabularies, boundaries and stats: the same bytes. Dead letters: the same
    # lines, in shards that Beam's sink picks at random on any runner.
    records = sorted(p for p in local if not p.startswith(("dead_letter", "_SUCCESS")))
    assert records == sorted(p for p in dask if not p.startswith(("dead_letter", "_SUCCESS")))
    assert len([p for p in records if p.endswith(".tfrecord")]) == 9
    for path in records:
        assert local[path] == dask[path], path

    def dead_letters(tree):
        return sorted(line for path, data in tree.items() if path.startswith("dead_letter")
                      for line in data.decode().splitlines())

    assert dead_letters(local) == dead_letters(dask) and len(dead_letters(dask)) == 2
    stats = json.loads(dask["artifacts/stats.json"])
    assert stats["rows_in"] == stats["rows_used"] + stats["rows_rejected"]
    assert stats["rows_rejected"] == 2 and stats["users"] == 60 and "labels" in stats


def test_features_on_dask_write_the_local_runners_table(tmp_path):
    from autorisk_tf import evaluate
    from beam import features
    from tests.test_features import EVENTS, SCHEMA

    (tmp_path / "schema.yaml").write_text(SCHEMA)
    (tmp_path / "events.csv").write_text(EVENTS)
    tables = {}
    for name, extra in (("local", []), ("dask", DASK)):
        stats = features.run(["--input", str(tmp_path / "events.csv"), "--schema",
                              str(tmp_path / "schema.yaml"), "--output_dir",
                              str(tmp_path / name), "--top_values", "2",
                              "--as_of", "2026-01-06T00:00:00", *extra])
        keys, values, columns = evaluate.load_features(str(tmp_path / name))
        order = np.argsort(keys)
        tables[name] = (stats, list(np.array(keys)[order]), values[order], columns)
    (local_stats, local_keys, local_values, local_columns) = tables["local"]
    (dask_stats, dask_keys, dask_values, dask_columns) = tables["dask"]
    assert dask_stats == local_stats and dask_stats["rows_rejected"] == 1
    assert dask_keys == local_keys == ["u1", "u2", "u3"] and dask_columns == local_columns
    np.testing.assert_array_equal(dask_values, local_values)


def test_embed_on_dask_gives_the_training_paths_vectors(exported, tmp_path):
    from autorisk_tf.embed import embed, load_embedder, split_patterns
    from beam import embed as job

    pattern = split_patterns(exported.data, "all")
    users = job.run(["--model", exported.version_dir, "--input", pattern, "--output",
                     str(tmp_path / "emb"), "--batch_size", "7", *DASK])
    table = pq.read_table(glob.glob(str(tmp_path / "emb-*.parquet"))).to_pydict()
    keys, want, _ = embed(load_embedder(exported.model_dir), pattern, exported.schema)
    assert users == len(keys) == len(table["key"]) == 40
    got = dict(zip(table["key"], table["embedding"], strict=True))
    np.testing.assert_allclose(np.array([got[k] for k in keys]), want, atol=1e-5)
    assert job.dead_letters(str(tmp_path / "emb")) == {}


@pytest.mark.parametrize("job_name", ["preprocess", "features", "embed"])
def test_every_job_takes_the_dask_flags(job_name):
    import importlib

    parser = importlib.import_module(f"beam.{job_name}").build_parser()
    assert "--dask_workers" in parser.format_help()
