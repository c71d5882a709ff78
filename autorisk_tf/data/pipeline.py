"""The tf.data input pipeline for training: shards -> length-bucketed batches of ids.

Shards are read with parallel interleaving, parsed one example at a time, grouped into
batches of similar length (`bucket_by_sequence_length`, so little padding), and mapped to ids
by the same `EventPreprocessor` that the exported model uses at serving time. Context values
(key, labels) ride along in each batch.

Example:
```python
artifacts = Artifacts.load("out/artifacts")
preprocessor = EventPreprocessor.from_artifacts(artifacts)
for batch in id_batches("out/train/*.tfrecord", artifacts.schema, preprocessor,
                        InputConfig(batch_size=32)):
    batch["event_type"]  # int32 [32, T] ids; batch["padding_mask"] bool [32, T]
```
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from autorisk_tf.data import reader
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.schema import Schema


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How batches are formed (the `input:` section of a training config).

    Args:
        batch_size: int. Sequences per (global) batch. Defaults to 32.
        bucket_boundaries: tuple of int. Length boundaries of the buckets; a batch holds
            sequences of one bucket, padded to its longest. Defaults to powers of two.
        shuffle_buffer: int. Examples in the shuffle buffer (training only).
            Defaults to 2048.
        seed: int. Seed of shuffling and of every random choice in the pipeline; the same
            seed gives the same batches. Defaults to 0.
    """

    batch_size: int = 32
    bucket_boundaries: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048, 4096)
    shuffle_buffer: int = 2048
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "bucket_boundaries", tuple(self.bucket_boundaries))


def raw_batches(file_pattern: str, schema: Schema, config: InputConfig, training: bool,
                ) -> tf.data.Dataset:
    """Batches of parsed raw values, bucketed by length.

    Args:
        file_pattern: str. Glob of TFRecord shards (local or gs://).
        schema: Schema. The schema the shards were written with.
        config: InputConfig. Batch size, buckets, shuffle buffer and seed.
        training: bool. Shuffle, repeat forever and keep only full batches; else one pass
            in file order, last batches possibly smaller.

    Returns:
        Dataset of dicts as `reader.parse_batch` returns them (padded with 0 / "").
    """
    records = reader.records(file_pattern, shuffle=training, seed=config.seed)
    if training:
        records = records.shuffle(config.shuffle_buffer, seed=config.seed).repeat()
    examples = records.map(lambda s: reader.parse_example(s, schema),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    sizes = [config.batch_size] * (len(config.bucket_boundaries) + 1)
    return examples.bucket_by_sequence_length(
        lambda ex: tf.cast(ex[seqex.LENGTH], tf.int32), list(config.bucket_boundaries), sizes,
        drop_remainder=training)


def id_batches(file_pattern: str, schema: Schema, preprocessor, config: InputConfig,
               training: bool = True) -> tf.data.Dataset:
    """Batches of model-input ids plus the key and label columns.

    Args:
        file_pattern: str. Glob of TFRecord shards.
        schema: Schema. The schema the shards were written with.
        preprocessor: EventPreprocessor. Raw values to ids (the serving layer).
        config: InputConfig. Batch size, buckets, shuffle buffer and seed.
        training: bool. See `raw_batches`.

    Returns:
        Dataset of dicts: the preprocessor's ids and `padding_mask`, `key` and every
        `label/<name>` of the schema.
    """
    context = [seqex.KEY] + [seqex.label_feature(label.name) for label in schema.labels]

    def to_ids(raw):
        return {**preprocessor(raw), **{name: raw[name] for name in context}}

    return (raw_batches(file_pattern, schema, config, training)
            .map(to_ids, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def with_seeds(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Pairs every element with a fresh stateless-random seed ([2] int64).

    The seeds come from `tf.data.Dataset.random(seed)` zipped after any `repeat`, so a
    repeated dataset draws new random choices (masks, cut points) on every pass while the
    whole sequence stays reproducible for the seed.
    """
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip((dataset, seeds))


def slice_rows(batch: dict, index: int, count: int) -> dict:
    """Rows `[index * b, (index + 1) * b)` of every [B, ...] tensor, `b = B / count`.

    Each data-parallel replica takes its slice of the same global batch, so any number of
    workers and replicas trains on exactly the batches a single device would see.
    """
    def take(t):
        rows = tf.shape(t)[0] // count
        return t[index * rows:(index + 1) * rows]

    return tf.nest.map_structure(take, batch)
