"""Reads the Beam job's TFRecord shards back into tensors.

`parse_batch` turns a batch of serialised SequenceExamples into dense, padded tensors (one per
context feature and feature list, plus `length`); `make_dataset` builds the tf.data pipeline
over shards; `read_sequences` yields one example at a time as NumPy values, for tools and
tests.

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
    files = tf.data.Dataset.list_files(file_pattern, shuffle=shuffle, seed=seed)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=tf.data.AUTOTUNE,
                               num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=seed is not None or not shuffle)
    if shuffle:
        records = records.shuffle(10_000, seed=seed)
    if repeat:
        records = records.repeat()
    return (records.batch(batch_size)
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
