"""Reads the Beam job's TFRecord shards back into tensors.

Every reader of shards starts from `records` (the one place that lists and interleaves
them, in an order that does not depend on the machine). `examples` parses them one by one
(training and fine-tuning batch them by length); `parse_batch` turns a batch of serialised
SequenceExamples into dense, padded tensors (one per context feature and feature list, plus
`length`); `of_keys` keeps the records of some users; `make_dataset` batches and parses;
`read_sequences` yields one example at a time as NumPy values, for tools and tests.

Example:
```python
schema = Artifacts.load("out/artifacts").schema
for batch in make_dataset("out/train/*.tfrecord", schema, batch_size=32):
    batch["event/amount"]  # float32 [32, T], padded with 0
```
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.schema import Schema


def parse_batch(serialized: tf.Tensor, schema: Schema) -> dict[str, tf.Tensor]:
    """Parses a batch of serialised SequenceExamples.

    Args:
        serialized: string tensor [B]. Serialised `tf.train.SequenceExample`s.
        schema: Schema. The schema they were written with.

    Returns:
        Dict of tensors: context features [B], feature lists [B, T] padded with 0 / "" to
        the longest sequence of the batch (`length` [B] tells the real lengths).
    """
    context_spec, sequence_spec = seqex.parsing_spec(schema)
    context, sequences, _ = tf.io.parse_sequence_example(
        serialized, context_features=context_spec, sequence_features=sequence_spec)
    return {**context, **sequences}


# Shards read at once: a fixed number, so that the order of the records is the same on a
# 2-core machine and a 64-core one (`tf.data`'s default follows the core count).
CYCLE_LENGTH = 4


def records(file_pattern: str, shuffle: bool = False, seed: int | None = None,
            ) -> tf.data.Dataset:
    """The serialised SequenceExamples of some shards, `CYCLE_LENGTH` shards interleaved.

    Args:
        file_pattern: str. Glob of the shards (local or gs://).
        shuffle: bool. Shuffle the order of the files (not the records).
        seed: int or None. Seed of that shuffle.

    Returns:
        A `tf.data.Dataset` of string scalars, in a deterministic order.
    """
    files = tf.data.Dataset.list_files(file_pattern, shuffle=shuffle, seed=seed)
    return files.interleave(tf.data.TFRecordDataset, cycle_length=CYCLE_LENGTH,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def parse_example(serialized: tf.Tensor, schema: Schema) -> dict[str, tf.Tensor]:
    """Parses one serialised SequenceExample into context scalars and [T] feature lists."""
    context_spec, sequence_spec = seqex.parsing_spec(schema)
    context, sequences = tf.io.parse_single_sequence_example(
        serialized, context_features=context_spec, sequence_features=sequence_spec)
    return {**context, **sequences}


def of_keys(serialized: tf.data.Dataset, keys) -> tf.data.Dataset:
    """Keeps the records of some users, reading only each record's key.

    Args:
        serialized: `tf.data.Dataset` of serialised SequenceExamples (as `records` gives).
        keys: collection of str. The users' keys.

    Returns:
        The records whose key is one of `keys`, in their order.
    """
    if not keys:
        return serialized.take(0)
    wanted = tf.constant(sorted(keys), tf.string)
    spec = {seqex.KEY: tf.io.FixedLenFeature([], tf.string)}

    def held(record):
        context, _ = tf.io.parse_single_sequence_example(record, context_features=spec)
        return tf.reduce_any(tf.equal(context[seqex.KEY], wanted))

    return serialized.filter(held)


def examples(file_pattern: str, schema: Schema) -> tf.data.Dataset:
    """The parsed examples of some shards, one by one, in `records`' order.

    Args:
        file_pattern: str. Glob of the shards.
        schema: Schema. The schema the shards were written with.

    Returns:
        A `tf.data.Dataset` of dicts as `parse_example` returns them.
    """
    return records(file_pattern).map(lambda s: parse_example(s, schema),
                                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_dataset(file_pattern: str, schema: Schema, batch_size: int, shuffle: bool = False,
                 seed: int | None = None, repeat: bool = False) -> tf.data.Dataset:
    """Builds a batched dataset of parsed sequences from TFRecord shards.

    Args:
        file_pattern: str. Glob of the shards (local or gs://).
        schema: Schema. The schema the shards were written with.
        batch_size: int. Sequences per batch.
        shuffle: bool. Shuffle files and examples.
        seed: int or None. Seed for shuffling; with a seed the order is deterministic.
        repeat: bool. Repeat forever.

    Returns:
        A `tf.data.Dataset` of dicts as returned by `parse_batch`.
    """
    serialized = records(file_pattern, shuffle=shuffle, seed=seed)
    if shuffle:
        serialized = serialized.shuffle(10_000, seed=seed)
    if repeat:
        serialized = serialized.repeat()
    return (serialized.batch(batch_size)
            .map(lambda s: parse_batch(s, schema), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def read_sequences(file_pattern: str, schema: Schema) -> Iterator[dict[str, np.ndarray]]:
    """Yields every example of some shards as a dict of NumPy values (strings decoded).

    Args:
        file_pattern: str. Glob of the shards.
        schema: Schema. The schema the shards were written with.

    Yields:
        One dict per example: context values as scalars, feature lists as arrays of the
        example's own length; bytes are decoded to `str`.
    """
    for batch in make_dataset(file_pattern, schema, batch_size=1):
        example = {}
        for name, tensor in batch.items():
            value = tensor.numpy()[0]
            if isinstance(value, np.ndarray) and value.dtype == object:
                value = np.array([v.decode("utf-8") for v in value], dtype=object)
            elif isinstance(value, bytes):
                value = value.decode("utf-8")
            example[name] = value
        yield example
