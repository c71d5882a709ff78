"""SavedModel export: same vectors as training's input path, hermetic, stock ops only."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.data import raw_batch
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.schema import TimeFeatures
from tests.conftest import SERVING_MAX_LEN


def _training_path(exported):
    """Keys and embeddings of every user through autorisk_tf.embed (the training path)."""
    from autorisk_tf.embed import embed, load_embedder, split_patterns

    keys, vectors, _ = embed(load_embedder(exported.model_dir),
                             split_patterns(exported.data, "all"), exported.schema)
    return list(keys), vectors


def test_time_features_match_the_beam_job():
    from autorisk_tf.data import events

    rng = np.random.default_rng(0)
    ts = np.sort(rng.integers(-10**11, 10**13, size=(3, 50)), axis=1)
    for offset in (0.0, 5.5, -8.0):
        config = TimeFeatures(utc_offset_hours=offset)
        ours = raw_batch.time_features(tf.constant(ts), config)
        for row in range(3):
            want = events.time_features(ts[row], config)
            np.testing.assert_array_equal(ours[seqex.HOUR][row].numpy(), want["hour"])
            np.testing.assert_array_equal(ours[seqex.DAY_OF_WEEK][row].numpy(),
                                          want["day_of_week"])
            np.testing.assert_array_equal(ours[seqex.DELTA_SECONDS][row].numpy(),
                                          want["delta_seconds"])


def test_raw_batch_sorts_stably_and_keeps_the_most_recent_events(exported):
    schema = exported.schema
    inputs = {name: tf.constant(value) for name, value in {
        "event_type": np.array([[b"c", b"a", b"b", b"d"], [b" ", b"x", b"", b""]]),
        "amount": np.array([[3, 1, 2, 4], [np.inf, 5, 0, 0]], np.float32),
        "amount_by_type": np.array([[3, 1, 2, 4], [np.inf, 5, 0, 0]], np.float32),
        "item": np.array([[b"", b"", b"", b""]] * 2),
        "tags": np.array([[b"", b"", b"", b""]] * 2),
        "timestamp_ms": np.array([[3000, 1000, 1000, 9000], [7000, 6000, 0, 0]], np.int64),
        "length": np.array([4, 2], np.int64)}.items()}
    out = raw_batch.parse_raw_batch(inputs, schema, max_len=3)
    # user 0 sorted: a(1000) b(1000, tie keeps input order) c(3000) d(9000); last 3 kept
    assert out["event/event_type"].numpy()[0].tolist() == [b"b", b"c", b"d"]
    assert out["event/amount"].numpy()[0].tolist() == [2, 3, 4]
    assert out["length"].numpy().tolist() == [3, 2]
    np.testing.assert_allclose(out["time/delta_seconds"].numpy()[0], [0, 2, 6])
    # user 1: x(6000) then " "(7000), which is missing; inf is a missing number
    assert out["event/event_type"].numpy()[1, :2].tolist() == [b"x", b""]
    assert np.isnan(out["event/amount"].numpy()[1, 1])
    assert np.isnan(out["time/delta_seconds"].numpy()[1, 0])


def test_every_signature_gives_the_training_paths_vectors(exported):
    keys, want = _training_path(exported)
    lengths = {k: sum(row["user_id"] == k for row in exported.rows) for k in keys}
    assert max(lengths.values()) > SERVING_MAX_LEN  # truncation is exercised
    oov = {row["event_type"] for row in exported.rows} - set(
        exported.artifacts.vocabulary("event_type")) - {""}
    assert oov  # unseen categories are exercised
    # amount_by_type: frequent event types have their own boundaries, the rest the global ones
    assert 1 <= len(exported.artifacts.category_boundaries["amount_by_type"]) < len(oov)
    loaded = tf.saved_model.load(exported.version_dir)
    raw = loaded.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in exported.request(keys).items()})
    np.testing.assert_allclose(raw["embedding"].numpy(), want, atol=1e-5)
    assert raw["length"].numpy().tolist() == [min(lengths[k], SERVING_MAX_LEN) for k in keys]
    records = {}
    for split in ("train", "valid", "test"):
        for path in tf.io.gfile.glob(f"{exported.data}/{split}/*.tfrecord"):
            for record in tf.data.TFRecordDataset(path):
                example = tf.train.SequenceExample.FromString(record.numpy())
                key = example.context.feature["key"].bytes_list.value[0].decode()
                records[key] = record.numpy()
    examples = loaded.signatures["embed_examples"](
        examples=tf.constant([records[k] for k in keys]))
    np.testing.assert_allclose(examples["embedding"].numpy(), want, atol=1e-5)


def test_padding_a_user_with_others_does_not_change_their_vector(exported):
    loaded = tf.saved_model.load(exported.version_dir)
    run = loaded.signatures["serving_default"]
    keys = ["u000", "u001", "u002"]
    together = run(**{k: tf.constant(v) for k, v in exported.request(keys).items()})
    alone = run(**{k: tf.constant(v) for k, v in exported.request(["u001"]).items()})
    np.testing.assert_allclose(together["embedding"].numpy()[1], alone["embedding"].numpy()[0],
                               atol=1e-5)


def test_export_is_hermetic(exported, tmp_path):
    """A fresh process loads every signature, `explain` too, without this package."""
    from autorisk_tf.embed import load_embedder
    from autorisk_tf.explain import integrated_gradients
    from autorisk_tf.finetune import SequenceClassifier
    from export import savedmodel

    run = tmp_path / "run"
    shutil.copytree(exported.model_dir, run)
    shutil.copytree(os.path.join(exported.data, "artifacts"), tmp_path / "artifacts")
    classifier = SequenceClassifier(load_embedder(exported.model_dir), name="clf")
    classifier.build()
    classifier.save(str(run / "classifier.keras"))
    copy = savedmodel.export(str(run), str(tmp_path / "models" / "autorisk"),
                             classifier_path=str(run / "classifier.keras"))
    shutil.rmtree(run)
    shutil.rmtree(tmp_path / "artifacts")
    keys = ["u003", "u004"]
    request = exported.request(keys)
    original = tf.saved_model.load(exported.version_dir)
    want = original.signatures["serving_default"](
        **{k: tf.constant(v) for k, v in request.items()})["embedding"].numpy()
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        tf.io.gfile.glob(f"{exported.data}/train/*.tfrecord")).take(3)]
    want_examples = original.signatures["embed_examples"](
        examples=tf.constant(records))["embedding"].numpy()
    parsed = raw_batch.parse_raw_batch({k: tf.constant(v) for k, v in request.items()},
                                       exported.schema, SERVING_MAX_LEN)
    want_explained = integrated_gradients(classifier, parsed, savedmodel.EXPLAIN_STEPS)
    np.savez(tmp_path / "request.npz", **request)
    np.save(tmp_path / "records.npy", np.array(records, dtype=object), allow_pickle=True)
    script = f"""
import json, sys, numpy as np, tensorflow as tf
model = tf.saved_model.load({copy!r})
request = dict(np.load({str(tmp_path / "request.npz")!r}))
raw = model.signatures["serving_default"](**{{k: tf.constant(v) for k, v in request.items()}})
records = np.load({str(tmp_path / "records.npy")!r}, allow_pickle=True).tolist()
examples = model.signatures["embed_examples"](examples=tf.constant(records))
explained = model.signatures["explain"](**{{k: tf.constant(v) for k, v in request.items()}})
assert not any(name.split(".")[0] in ("autorisk_tf", "export", "beam")
               for name in sys.modules), "the SavedModel pulled in a Python package"
print(json.dumps({{"embedding": raw["embedding"].numpy().tolist(),
                  "examples": examples["embedding"].numpy().tolist(),
                  "attribution": explained["attribution"].numpy().tolist(),
                  "score": explained["score"].numpy().tolist(),
                  "signatures": sorted(model.signatures)}}))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["signatures"] == ["embed_examples", "explain", "serving_default"]
    np.testing.assert_allclose(np.array(out["embedding"]), want, atol=1e-5)
    np.testing.assert_allclose(np.array(out["examples"]), want_examples, atol=1e-5)
    # The signature's reason codes are the library's (the same steps, in the graph).
    np.testing.assert_allclose(np.array(out["attribution"]),
                               want_explained["attribution"].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.array(out["score"]), want_explained["score"].numpy(),
                               atol=1e-6)


def test_export_uses_only_ops_a_stock_model_server_has(exported):
    from export import savedmodel

    ops = savedmodel.graph_op_types(exported.version_dir)
    assert {"ParseSequenceExampleV2", "Bucketize", "LookupTableFindV2",
            "UnicodeDecode"} <= ops
    assert savedmodel.unsupported_ops(ops) == []
    assert savedmodel.unsupported_ops(
        {"MatMul", "WordpieceTokenizeWithOffsets", "SentencepieceOp"}) == ["SentencepieceOp"]


def test_warmup_request_replays(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    from export.savedmodel import WARMUP_FILE

    records = list(tf.data.TFRecordDataset(os.path.join(exported.version_dir, WARMUP_FILE)))
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert request.model_spec.name == "autorisk"
    assert request.model_spec.signature_name == "serving_default"
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    out = tf.saved_model.load(exported.version_dir).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in inputs.items()})
    # `ids`: 3 event types, 4 tags and 8 hashed ones (ids_dim 8 wide); `state`: 6
    # statistics of amount_by_type per event type
    assert out["embedding"].shape == (2, 16 * 2 + 3 + 8 + 6 * 3)
    assert out["length"].numpy().tolist() == [3, 2]
    assert np.all(np.isfinite(out["embedding"].numpy()))


def test_export_with_a_classifier_adds_its_score(exported, tmp_path):
    from autorisk_tf.embed import load_embedder
    from autorisk_tf.finetune import SequenceClassifier
    from export import savedmodel

    classifier = SequenceClassifier(load_embedder(exported.model_dir), name="clf")
    classifier.build()
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    version_dir = savedmodel.export(exported.model_dir, str(tmp_path / "models" / "risk"),
                                    version=7, classifier_path=path)
    assert version_dir.endswith(os.path.join("risk", "7"))
    keys = ["u005", "u006", "u007"]
    request = exported.request(keys)
    out = tf.saved_model.load(version_dir).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in request.items()})
    parsed = raw_batch.parse_raw_batch({k: tf.constant(v) for k, v in request.items()},
                                       exported.schema, SERVING_MAX_LEN)
    want = classifier(parsed, training=False).numpy()[:, 0]
    np.testing.assert_allclose(out["score"].numpy(), want, atol=1e-5)
    with pytest.raises(FileExistsError):
        savedmodel.export(exported.model_dir, str(tmp_path / "models" / "risk"), version=7)
    assert savedmodel.next_version(str(tmp_path / "models" / "risk")) == 8


def test_export_cli_errors_name_the_problem(tmp_path):
    result = subprocess.run([sys.executable, "-m", "export.savedmodel", "--model_dir",
                             str(tmp_path / "nothing"), "--output", str(tmp_path / "m")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "encoder.keras not found" in result.stderr
