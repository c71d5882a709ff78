"""Embeds every sequence of some TFRecord shards with a trained encoder (in-process).

  python -m autorisk_tf.embed --model_dir runs/x --data out/ --split test \
      --output embeddings/test [--format parquet|csv]
  python -m autorisk_tf.embed ... --split all            # every split (train,valid,test)
  python -m autorisk_tf.embed ... --input 'other/*.tfrecord'   # any shards

Writes `<output>.npy` (float32 [N, E]) and `<output>.parquet` or `.csv` with the key column,
the label columns and one column per embedding dimension, rows in the same order.
"""

from __future__ import annotations

import os
import sys
import weakref

import numpy as np
from absl import app, flags

from autorisk_tf.cli import require_flags
from autorisk_tf.data import fileio, output_folder
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.artifacts import Artifacts
from autorisk_tf.data.fingerprint import embedding_parts, model_fingerprint, parts_text
from autorisk_tf.data.schema import Schema

FLAGS = flags.FLAGS


def split_patterns(data: str, split: str) -> str:
    """The shard glob(s) of one split, `all` splits or a comma-separated list of splits.

    Raises:
        ValueError: an unknown split name.
        fileio.EmptySplitError: a named split (or, for `all`, every split) is empty.
    """
    from autorisk_tf.contract import SPLITS

    names = list(SPLITS) if split == "all" else [s.strip() for s in split.split(",")]
    unknown = [name for name in names if name not in SPLITS]
    if unknown or not names:
        raise ValueError(f"unknown split(s) {unknown}: use {', '.join(SPLITS)}, all, "
                         "or a comma-separated list")
    if split == "all":  # every split that holds sequences; at least one must
        patterns = []
        for name in names:
            try:
                patterns.append(fileio.split_pattern(data, name))
            except fileio.EmptySplitError:
                continue
        if not patterns:
            raise fileio.EmptySplitError(f"no split of {data} holds sequences")
        return ",".join(patterns)
    return ",".join(fileio.split_pattern(data, name) for name in names)


def load_embedder(model_dir: str):
    """Loads `encoder.keras` (preprocessor + encoder) written by training."""
    import keras

    import autorisk_tf.layers  # noqa: F401 - registers the layers for loading
    from autorisk_tf.contract import ENCODER_FILE

    path = fileio.join(model_dir, ENCODER_FILE)
    if not os.path.exists(path) and "://" not in path:
        raise FileNotFoundError(f"{path} not found: train a model into {model_dir} first")
    return keras.models.load_model(path)


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _embedding_function(embedder):
    """The embedder's compiled `batch -> embedding`, one per embedder.

    Embedding several splits or shard sets with one model traces its graphs once, not once
    per call.
    """
    import tensorflow as tf

    if embedder not in _FUNCTIONS:
        model = weakref.ref(embedder)  # the function must not keep its key alive
        _FUNCTIONS[embedder] = tf.function(
            lambda batch: model()(batch, training=False)["embedding"], reduce_retracing=True)
    return _FUNCTIONS[embedder]


def embed(embedder, file_pattern: str, schema: Schema, batch_size: int = 64,
          ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Embeds every sequence of the shards, in file order.

    Args:
        embedder: SequenceEmbedder. Raw parsed events to embeddings.
        file_pattern: str. Glob of TFRecord shards, or several globs comma-separated.
        schema: Schema. The schema the shards were written with.
        batch_size: int. Sequences per batch.

    Returns:
        `(keys, embeddings, labels)`: keys [N] str, embeddings float32 [N, E], and each
        label column [N] (float for binary / numeric, str for categorical; NaN or "" when
        the label table had no row).
    """
    import tensorflow as tf

    from autorisk_tf.data import reader

    run = _embedding_function(embedder)
    keys, vectors = [], []
    labels = {label.name: [] for label in schema.labels}
    paths = sorted({p for pattern in file_pattern.split(",") if pattern
                    for p in tf.io.gfile.glob(pattern)})
    for batch in (reader.make_dataset(paths, schema, batch_size=batch_size) if paths else []):
        vectors.append(run(batch).numpy().astype(np.float32))
        keys.extend(k.decode("utf-8") for k in batch[seqex.KEY].numpy())
        for name, values in labels.items():
            column = batch[seqex.label_feature(name)].numpy()
            values.extend(v.decode("utf-8") if isinstance(v, bytes) else float(v)
                          for v in column)
    if not vectors:
        raise ValueError(f"no sequences match {file_pattern}")
    return (np.array(keys, dtype=object), np.concatenate(vectors),
            {name: np.array(v) for name, v in labels.items()})


def write_embeddings(output: str, keys, embeddings, labels, fmt: str = "parquet",
                     model: str = "", parts: list | None = None) -> list[str]:
    """Writes `<output>.npy` and a `.parquet` or `.csv` table; returns the paths.

    A Parquet table carries `model` (the model's fingerprint) and `parts` (the embedding's
    `[[name, width], ...]`) in its metadata, under `contract.FINGERPRINT_METADATA` and
    `contract.PARTS_METADATA`.
    """
    import pyarrow as pa

    from autorisk_tf.contract import FINGERPRINT_METADATA, PARTS_METADATA

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    np.save(output + ".npy", embeddings)
    columns = {"key": list(keys), **{f"label_{k}": list(v) for k, v in labels.items()}}
    columns.update({f"e{i}": embeddings[:, i] for i in range(embeddings.shape[1])})
    table = pa.table(columns)
    if fmt == "parquet":
        table = table.replace_schema_metadata({FINGERPRINT_METADATA: model.encode(),
                                               PARTS_METADATA: parts_text(parts).encode()})
        import pyarrow.parquet as pq

        pq.write_table(table, output + ".parquet")
        return [output + ".npy", output + ".parquet"]
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, output + ".csv")
    return [output + ".npy", output + ".csv"]


def define_flags() -> None:
    """Defines the command-line flags.

    Called only when the module runs as a script, so that importing it next to other
    tools never defines a flag twice.
    """
    flags.DEFINE_string("model_dir", None, "Training output folder (holds encoder.keras).")
    flags.DEFINE_string("data", None, "Output folder of beam.preprocess.")
    flags.DEFINE_string("split", "test", "Split to embed: train, valid, test, all, or a "
                        "comma-separated list.")
    flags.DEFINE_string("input", None, "Shards to embed (glob), instead of --split.")
    flags.DEFINE_string("output", None, "Output path prefix (.npy and .parquet/.csv are added).")
    flags.DEFINE_enum("format", "parquet", ["parquet", "csv"], "Table format.")
    flags.DEFINE_integer("batch_size", 64, "Sequences per batch.")


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    require_flags("model_dir", "data", "output")
    try:
        pattern = FLAGS.input or split_patterns(FLAGS.data, FLAGS.split)
        if FLAGS.input:
            import tensorflow as tf

            output_folder.check_shards([p for part in pattern.split(",") if part
                                        for p in tf.io.gfile.glob(part)])
    except fileio.OutputFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ValueError as e:
        sys.exit(f"error: {e}")
    schema = Artifacts.load(fileio.join(FLAGS.data, "artifacts")).schema
    try:
        embedder = load_embedder(FLAGS.model_dir)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    try:
        keys, vectors, labels = embed(embedder, pattern, schema, FLAGS.batch_size)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for path in write_embeddings(FLAGS.output, keys, vectors, labels, FLAGS.format,
                                 model_fingerprint(FLAGS.model_dir),
                                 embedding_parts(embedder)):
        print(f"wrote {path}")
    print(f"{len(keys)} sequences, embedding size {vectors.shape[1]}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
