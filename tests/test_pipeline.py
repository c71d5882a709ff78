import numpy as np
import tensorflow as tf

from autorisk_tf.data import pipeline
from autorisk_tf.layers import EventPreprocessor


def _batches(run, training, seed=0, batch_size=16, count=None):
    artifacts = run.artifacts
    config = pipeline.InputConfig(batch_size=batch_size, bucket_boundaries=(32, 64, 128),
                                  shuffle_buffer=64, seed=seed)
    data = pipeline.id_batches(f"{run.output_dir}/train/*.tfrecord", artifacts.schema,
                               EventPreprocessor.from_artifacts(artifacts), config, training)
    if count:
        data = data.take(count)
    return [{k: v.numpy() for k, v in batch.items()} for batch in data]


def test_one_pass_sees_every_sequence_once_in_length_buckets(simulated):
    batches = _batches(simulated, training=False)
    keys = [k.decode() for b in batches for k in b["key"]]
    train_keys = [k for k, exs in simulated.examples.items() if exs[0]["split"] == "train"]
    assert sorted(keys) == sorted(train_keys)
    edges = [0, 32, 64, 128, 10**9]
    for batch in batches:
        lengths = batch["padding_mask"].sum(1)
        bucket = np.searchsorted(edges, lengths, side="right")
        assert len(set(bucket)) == 1  # one bucket per batch: little padding
        assert batch["padding_mask"].shape[1] == lengths.max()
        for key, is_risk in zip(batch["key"], batch["label/is_risk"], strict=True):
            assert is_risk == simulated.one(key.decode())["label/is_risk"]


def test_training_batches_are_full_shuffled_and_reproducible(simulated):
    first = _batches(simulated, training=True, seed=3, count=6)
    again = _batches(simulated, training=True, seed=3, count=6)
    other = _batches(simulated, training=True, seed=4, count=6)
    assert all(b["key"].shape == (16,) for b in first)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["key"], b["key"])
    assert any(not np.array_equal(a["key"], b["key"]) for a, b in zip(first, other,
                                                                       strict=True))


def test_with_seeds_gives_new_seeds_on_every_pass():
    data = pipeline.with_seeds(tf.data.Dataset.range(3).repeat(2), seed=1)
    seeds = [tuple(s.numpy()) for _, s in data]
    assert len(set(seeds)) == 6  # the second pass draws new seeds
    assert seeds == [tuple(s.numpy()) for _, s in pipeline.with_seeds(
        tf.data.Dataset.range(3).repeat(2), seed=1)]


def test_slice_rows_partitions_a_batch():
    batch = {"a": tf.reshape(tf.range(24), (8, 3)), "b": tf.range(8)}
    parts = [pipeline.slice_rows(batch, i, 4) for i in range(4)]
    np.testing.assert_array_equal(tf.concat([p["a"] for p in parts], 0), batch["a"])
    assert all(p["b"].shape == (2,) for p in parts)
