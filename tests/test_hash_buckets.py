"""`hash_buckets`: values outside a categorical field's vocabulary get hashed ids of their own."""

import glob

import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.data import artifacts as art
from autorisk_tf.data import reader
from autorisk_tf.data.schema import SchemaError, parse_schema
from autorisk_tf.layers import EventPreprocessor, feature_specs_from_artifacts
from autorisk_tf.layers.field_embedding import FieldEmbedding, num_ids, vocabulary_ids
from autorisk_tf.layers.id_bag import IdBag

SCHEMA = """\
key: u
timestamp: {column: t, format: epoch_ms}
fields:
  - {name: merchant, kind: categorical, max_vocab: 2, hash_buckets: 1000000}
  - {name: device, kind: categorical, max_vocab: 0, hash_buckets: 50}
"""


def _artifacts():
    return art.Artifacts(parse_schema(SCHEMA),
                         {"merchant": [["m1", 9], ["m2", 5]], "device": []}, {}, {})


def _batch():
    return {"length": tf.constant([3], tf.int64),
            "time/timestamp_ms": tf.zeros((1, 3), tf.int64),
            "time/delta_seconds": tf.constant([[np.nan, 1.0, 1.0]]),
            "time/hour": tf.zeros((1, 3), tf.int64),
            "time/day_of_week": tf.zeros((1, 3), tf.int64),
            "event/merchant": tf.constant([["m2", "merchant-9", ""]]),
            "event/device": tf.constant([["z", "m1", "z"]])}


def test_schema_option_and_its_checks():
    fields = parse_schema(SCHEMA).fields
    assert (fields[0].hash_buckets, fields[0].max_vocab) == (1_000_000, 2)
    assert (fields[1].hash_buckets, fields[1].max_vocab) == (50, 0)
    with pytest.raises(SchemaError, match="max_vocab: 0 keeps no value"):
        parse_schema(SCHEMA.replace(", hash_buckets: 50", ""))
    with pytest.raises(SchemaError, match="hash_buckets: must be at least 0"):
        parse_schema(SCHEMA.replace("hash_buckets: 50", "hash_buckets: -1"))
    with pytest.raises(SchemaError, match="'merchant' has hash_buckets"):
        parse_schema(SCHEMA + "  - {name: amount, kind: numeric, bucket_by: merchant}\n")


def test_ids_past_the_vocabulary_are_stable_fingerprints():
    specs = {s["name"]: s for s in feature_specs_from_artifacts(_artifacts())}
    assert (specs["merchant"]["vocab_size"], num_ids(specs["merchant"])) == (6, 1_000_006)
    assert (specs["device"]["vocab_size"], num_ids(specs["device"])) == (4, 54)
    ids = {k: v.numpy().tolist() for k, v in
           EventPreprocessor.from_artifacts(_artifacts())(_batch()).items()}
    # m2 is vocabulary id 5, "" is missing (1); FarmHash64("merchant-9") % 1e6 = 902219,
    # fixed for good: a model trained today must find the same row next year.
    assert ids["merchant"] == [[5, 6 + 902_219, 1]]
    z, m1 = tf.strings.to_hash_bucket_fast(["z", "m1"], 50).numpy().tolist()
    assert ids["device"] == [[4 + z, 4 + m1, 4 + z]]
    targets = vocabulary_ids(specs["merchant"], tf.constant(ids["merchant"]))
    assert targets.numpy().tolist() == [[5, art.OOV_ID, 1]]


def test_a_million_hashed_ids_embed_and_pool_with_sparse_gradients():
    specs = feature_specs_from_artifacts(_artifacts())
    ids = EventPreprocessor.from_artifacts(_artifacts())(_batch())
    embedding = FieldEmbedding(specs, width=8, merge="add")
    bag = IdBag(specs, dim=4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(embedding(ids) ** 2) + tf.reduce_sum(bag(ids) ** 2)
    tables = [embedding.table("merchant"), bag.weights[0]]
    assert [t.shape[0] for t in tables] == [1_000_006, 1_000_006]
    grads = tape.gradient(loss, [t.value for t in tables])
    assert all(isinstance(g, tf.IndexedSlices) for g in grads)
    assert sorted(set(grads[0].indices.numpy().tolist())) == [1, 5, 6 + 902_219]


def test_training_and_both_serving_paths_give_the_hashed_ids(exported):
    """The fixture's `tags` hash 8 buckets: the Beam job's records and raw requests agree."""
    from autorisk_tf.data import raw_batch
    from export.client import instances_from_rows, to_columns
    from tests.conftest import SERVING_MAX_LEN

    pre = EventPreprocessor.from_artifacts(exported.artifacts)
    spec = next(s for s in pre.features if s["name"] == "tags")
    records = [r.numpy() for path in sorted(glob.glob(f"{exported.data}/*/*.tfrecord"))
               for r in tf.data.TFRecordDataset(path)]
    parsed = reader.parse_batch(tf.constant(records), exported.schema)
    keys = [k.decode() for k in parsed["key"].numpy()]
    from_records = pre(parsed)["tags"].numpy()
    assert from_records.max() >= spec["vocab_size"]  # some tags are hashed
    rows = [r for r in exported.rows if r["user_id"] in keys]
    order, instances = instances_from_rows(rows, exported.schema)
    from_raw = pre(raw_batch.parse_raw_batch(
        {k: tf.constant(v) for k, v in to_columns(instances).items()}, exported.schema,
        SERVING_MAX_LEN))["tags"].numpy()
    for i, key in enumerate(order):
        j = keys.index(key)
        n = int(parsed["length"][j])
        np.testing.assert_array_equal(from_raw[i, :n], from_records[j, :n])
