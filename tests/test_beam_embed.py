"""beam.embed: RunInference on the SavedModel gives autorisk_tf.embed's vectors."""

import glob

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam import embed as job
from beam.preprocess import UsageError


def test_beam_embed_matches_the_training_path(exported, tmp_path):
    from autorisk_tf.embed import embed, load_embedder, split_patterns

    pattern = split_patterns(exported.data, "all")
    users = job.run(["--model", exported.version_dir, "--input", pattern, "--output",
                     str(tmp_path / "emb"), "--batch_size", "7"])
    table = pq.read_table(glob.glob(str(tmp_path / "emb-*.parquet"))).to_pydict()
    keys, want, labels = embed(load_embedder(exported.model_dir), pattern, exported.schema)
    assert users == len(keys) == len(table["key"]) == 40
    got = dict(zip(table["key"], table["embedding"], strict=True))
    np.testing.assert_allclose(np.array([got[k] for k in keys]), want, atol=1e-5)
    risk = dict(zip(table["key"], table["label_is_risk"], strict=True))
    np.testing.assert_array_equal([risk[k] for k in keys], labels["is_risk"])
    assert max(table["length"]) == 12 and min(table["length"]) >= 1


def test_length_batches_hold_users_of_one_length_bucket():
    batches = job.LengthBatches(batch_size=3, batch_events=64)
    batches.start_bundle()
    emitted = []
    for i, length in enumerate([5, 40, 6, 7, 41, 8, 100, 200]):
        emitted += list(batches.process((length, f"u{i}")))
    emitted += [windowed.value for windowed in batches.finish_bundle()]
    # Up to 16 events: 3 a batch (64 // 16 = 4, capped at 3); 40 and 41 pad to 45 and 100
    # and 200 to 128 and 256, over 64 events: one user a batch.
    assert emitted == [["u1"], ["u0", "u2", "u3"], ["u4"], ["u6"], ["u7"], ["u5"]]
    assert batches.capacity(16) == 3 and batches.capacity(17) == 2
    assert job.LengthBatches(64, 16384).capacity(5000) == 2


def test_beam_embed_rejects_bad_records_into_dead_letters(exported, tmp_path):
    import json

    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    from autorisk_tf.embed import embed, load_embedder, split_patterns

    pattern = split_patterns(exported.data, "all")
    shards = sorted(path for part in pattern.split(",") for path in glob.glob(part))
    good = [r.numpy() for r in tf.data.TFRecordDataset(shards)]
    no_key = example_pb2.SequenceExample()
    no_key.context.feature["length"].int64_list.value.append(3)
    no_events = example_pb2.SequenceExample()
    no_events.context.feature["key"].bytes_list.value.append(b"ghost")
    no_events.context.feature["length"].int64_list.value.append(2)
    bad = [b"\x0a\x10abc", no_key.SerializeToString(), no_events.SerializeToString()]
    path = str(tmp_path / "mixed.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i, record in enumerate(good):
            writer.write(record)
            if i % 13 == 0 and bad:
                writer.write(bad.pop())
    users = job.run(["--model", exported.version_dir, "--input", path,
                     "--output", str(tmp_path / "emb"), "--batch_size", "8"])
    letters = [json.loads(line) for f in glob.glob(str(tmp_path / "emb-dead_letter-*.jsonl"))
               for line in open(f, encoding="utf-8")]
    assert users == len(good) == 40
    assert users + len(letters) == len(good) + 3
    assert sorted(d["reason"] for d in letters) == [
        "no_key_or_events", "not_a_sequence_example", "rejected_by_model"]
    assert {d["file"] for d in letters} == {path}
    assert [d["raw"] for d in letters if d["reason"] == "rejected_by_model"] == ["ghost"]
    table = pq.read_table(glob.glob(str(tmp_path / "emb-*.parquet"))).to_pydict()
    keys, want, _ = embed(load_embedder(exported.model_dir), pattern, exported.schema)
    got = dict(zip(table["key"], table["embedding"], strict=True))
    np.testing.assert_allclose(np.array([got[k] for k in keys]), want, atol=1e-5)
    assert job.dead_letters(str(tmp_path / "emb")) == {
        "no_key_or_events": 1, "not_a_sequence_example": 1, "rejected_by_model": 1}


def test_beam_embed_files_name_the_model_and_its_parts(exported, tmp_path):
    from autorisk_tf.data.fingerprint import embedding_parts, model_fingerprint
    from autorisk_tf.embed import load_embedder, split_patterns
    from autorisk_tf.search import read_embeddings

    job.run(["--model", exported.version_dir, "--input", split_patterns(exported.data, "test"),
             "--output", str(tmp_path / "emb")])
    keys, vectors, model, parts = read_embeddings(str(tmp_path / "emb-*.parquet"))
    embedder = load_embedder(exported.model_dir)
    assert model == model_fingerprint(exported.model_dir)
    assert parts == embedding_parts(embedder)
    assert [name for name, _ in parts] == list(embedder.encoder.config.pooling)
    assert sum(width for _, width in parts) == vectors.shape[1] == embedder.encoder.embedding_dim


def test_beam_embed_names_a_folder_that_is_not_a_savedmodel(exported, tmp_path):
    with pytest.raises(UsageError, match="saved_model.pb"):
        job.run(["--model", str(tmp_path), "--input", f"{exported.data}/train/*.tfrecord",
                 "--output", str(tmp_path / "emb")])
