"""Reason codes: completeness, padding invariance, the CLI, and planted takeovers found."""

import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from autorisk_tf.data import raw_batch
from tests.conftest import SERVING_MAX_LEN


@pytest.fixture(scope="module")
def classifier(exported):
    """A classifier with a random head on the exported model's encoder (ids and state)."""
    import keras

    from autorisk_tf.embed import load_embedder
    from autorisk_tf.finetune import SequenceClassifier

    keras.utils.set_random_seed(3)
    model = SequenceClassifier(load_embedder(exported.model_dir), name="clf")
    model.build()
    # A head that moves the score well away from 0.5, so that the test is not trivial.
    model.head.kernel.assign(model.head.kernel * 4.0)
    return model


def _parsed(exported, keys):
    request = exported.request(keys)
    return raw_batch.parse_raw_batch({k: tf.constant(v) for k, v in request.items()},
                                     exported.schema, SERVING_MAX_LEN)


def test_the_bag_of_ids_follows_presence(exported):
    from autorisk_tf.embed import load_embedder

    embedder = load_embedder(exported.model_dir)
    ids = embedder.preprocessor(_parsed(exported, ["u000", "u001", "u002"]))
    bag = embedder.encoder.id_bag
    real = tf.cast(ids["padding_mask"], tf.float32)
    plain = bag(ids).numpy()
    full = bag(ids, presence={f: real for f in bag.field_names}).numpy()
    empty = bag(ids, presence={f: 0 * real for f in bag.field_names}).numpy()
    half = bag(ids, presence={f: 0.5 * real for f in bag.field_names}).numpy()
    np.testing.assert_allclose(full, plain, atol=1e-5)
    np.testing.assert_allclose(empty, 0.0, atol=1e-7)
    assert np.abs(plain).max() > 0.01
    # Halfway: each id is held to 1 - 0.5^k (k events hold it): more than half the bag.
    assert 0.5 * np.abs(plain).sum() < np.abs(half).sum() < np.abs(plain).sum()


def test_attributions_add_up_to_the_score_change(classifier, exported):
    from autorisk_tf.explain import explain

    keys = ["u000", "u001", "u002", "u003", "u004", "u005"]
    parsed = _parsed(exported, keys)
    result = explain(classifier, parsed, steps=32, tolerance=0.01)
    want = classifier(parsed, training=False).numpy()[:, 0]
    np.testing.assert_allclose(result["score"], want, atol=1e-6)
    delta = result["score"] - result["baseline_score"]
    assert np.abs(delta).max() > 0.05, (delta, result["steps"])
    gap = np.abs(result["attribution"].sum(axis=1) - delta)
    assert np.all(gap <= 0.01 * np.maximum(np.abs(delta), 0.01)), (gap, delta, result["steps"])
    np.testing.assert_allclose(result["completeness_error"],
                               gap / np.maximum(np.abs(delta), 0.01), atol=1e-4)
    # Each event's attribution splits exactly over its fields; padding gets nothing.
    np.testing.assert_allclose(result["field_attribution"].sum(-1), result["attribution"],
                               atol=1e-6)
    assert np.all(result["attribution"][~result["padding_mask"]] == 0)
    assert result["steps"].min() >= 32


def test_attributions_do_not_depend_on_padding(classifier, exported):
    from autorisk_tf.explain import integrated_gradients

    keys = [f"u{i:03d}" for i in range(12)]
    lengths = _parsed(exported, keys)["length"].numpy()
    short, long = keys[int(np.argmin(lengths))], keys[int(np.argmax(lengths))]
    together = integrated_gradients(classifier, _parsed(exported, [long, short]))
    alone = integrated_gradients(classifier, _parsed(exported, [short]))
    length = int(lengths.min())
    assert together["attribution"].shape[1] > length  # the short user is padded
    np.testing.assert_allclose(together["attribution"].numpy()[1, :length],
                               alone["attribution"].numpy()[0, :length], atol=1e-5)
    np.testing.assert_allclose(together["score"].numpy()[1], alone["score"].numpy()[0],
                               atol=1e-6)


def test_cli_writes_top_events_per_user(classifier, exported, tmp_path):
    from autorisk_tf.data import reader

    model_dir = tmp_path / "clf"
    model_dir.mkdir()
    classifier.save(str(model_dir / "classifier.keras"))
    keys = ["u000", "u002", "u005", "u007"]
    test_keys = {ex["key"] for ex in reader.read_sequences(
        f"{exported.data}/test/*.tfrecord", exported.schema)}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "autorisk_tf.explain", "--model_dir", str(model_dir),
         "--data", exported.data, "--split", "train,test", "--output", str(tmp_path / "out"),
         "--top_k", "3", "--full", "--keys", ",".join(keys)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = pq.read_table(tmp_path / "out" / "explanations.parquet").to_pylist()
    found = {ex["key"] for ex in reader.read_sequences(
        f"{exported.data}/train/*.tfrecord", exported.schema)} | test_keys
    assert sorted(row["key"] for row in rows) == sorted(set(keys) & found)
    fields = {field.name for field in exported.schema.fields}
    for row in rows:
        assert len(row["attribution"]) == row["length"]
        top = row["top_events"]
        assert len(top) == min(3, row["length"])
        assert [e["attribution"] for e in top] == sorted(row["attribution"], reverse=True)[
            :len(top)]
        assert [e["rank"] for e in top] == list(range(1, len(top) + 1))
        assert set(top[0]["values"]) == fields
        assert row["completeness_error"] <= 0.01
    assert "highest score" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "autorisk_tf.explain", "--model_dir", str(tmp_path),
         "--data", exported.data, "--output", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode != 0
    assert "classifier.keras not found" in missing.stderr


def test_explanations_point_at_the_planted_takeover(pretrained, pretraining_data):
    """Fine-tuned on `takeover`, a flagged takeover's top 5 events hold its planted triple.

    The simulator's decoys hold the same three events from a new device, days apart, so
    only the tight timing tells a takeover: the explanation must point at the triple, not
    at any password change or large transfer.
    """
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.explain import explain_split, read_planted
    from autorisk_tf.finetune import copy_embedder, finetune

    schema = Artifacts.load(f"{pretraining_data}/artifacts").schema
    embedder = copy_embedder(pretrained[0].embedder(), pretrained=True, seed=0)
    model, metrics = finetune(embedder, pretraining_data, schema, "takeover", epochs=6,
                              learning_rate=1e-3, verbose=0, probe=True, freeze_tables=True)
    planted = read_planted(os.path.join(os.path.dirname(pretraining_data), "raw",
                                        "planted_events.csv"))
    pattern = f"{pretraining_data}/valid/*.tfrecord,{pretraining_data}/test/*.tfrecord"
    rows, summary = explain_split(model, pattern, schema, top_k=5, keys=set(planted))
    flagged = [row for row in rows if row["score"] > 0.5]
    assert len(flagged) >= 10, (len(flagged), len(rows), metrics)
    top1 = np.mean([row["top_events"][0]["timestamp_ms"] in planted[row["key"]]
                    for row in flagged])
    two_of_three = np.mean([len({e["timestamp_ms"] for e in row["top_events"]}
                                & planted[row["key"]]) >= 2 for row in flagged])
    assert two_of_three >= 0.8, (two_of_three, top1, len(flagged), metrics["valid_auc"])
    assert top1 >= 0.8, (top1, two_of_three, len(flagged), metrics["valid_auc"])
    # At random, the top event of a sequence of n events is planted with chance 3 / n.
    chance = np.mean([3 / row["length"] for row in flagged])
    assert chance < 0.3
    assert summary["max_completeness_error"] <= 0.01
