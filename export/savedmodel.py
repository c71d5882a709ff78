"""Exports a trained encoder as a SavedModel that TF Serving loads as it is.

  python -m export.savedmodel --model_dir runs/x --output models/autorisk [--version N] \
      [--classifier runs/x/classifier.keras] [--max_len 4096] [--schema schema.yaml]

Writes `<output>/<version>/` (the next free integer by default), TF Serving's layout, with
two signatures (three with a classifier):

- `serving_default`: raw events of a batch of users, one tensor per schema field plus
  `timestamp_ms`, padded to the longest user, and `length` per user (`autorisk_tf.data.
  raw_batch`);
- `embed_examples`: serialized `tf.train.SequenceExample`s as `beam.preprocess` writes them.

Both return `embedding` float32 [B, E] and `length` int64 [B] (events used), plus `score`
([B] for a binary classifier, [B, C] class probabilities otherwise) when `--classifier` is
given. With `--classifier`, a third signature, `explain`, takes the same raw events as
`serving_default` and returns the score and each event's share of it (reason codes by
integrated gradients, all in the graph: `explain_outputs`, `autorisk_tf.explain`). All
preprocessing (sorting, time features, truncation to the most recent `max_len`
events, vocabulary look-ups, bucketing, tokenising) runs in the graph through the training
code's own `EventPreprocessor`, so the SavedModel needs nothing from this package to load.
`assets.extra/tf_serving_warmup_requests` holds a request TF Serving replays at load.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags, logging

from autorisk_tf.cli import require_flags
from autorisk_tf.contract import (
    EMBED_EXAMPLES,
    EXAMPLES_INPUT,
    EXPLAIN,
    FINGERPRINT_ASSET,
    PARTS_ASSET,
    SCHEMA_ASSET,
    SERVING_DEFAULT,
)
from autorisk_tf.data import fileio
from autorisk_tf.data.fingerprint import embedding_parts, model_fingerprint, parts_text

FLAGS = flags.FLAGS
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# Integration steps of the `explain` signature (completeness within 1% on the simulator's
# takeovers: `benchmarks/serving_bench.py`, docs/serving.md).
EXPLAIN_STEPS = 32
EXPLAIN_STEPS_PER_PASS = 16
# Ops of TF Text that TF Serving's model server links (tensorflow/serving#1405, since 2.0).
# The export itself tokenises with core ops; anything else outside core TensorFlow fails
# the check, because a stock model server could not load it.
SERVING_TEXT_OPS = frozenset({
    "CaseFoldUTF8", "ConstrainedSequence", "MaxSpanningTree", "NormalizeUTF8",
    "RegexSplitWithOffsets", "SentenceFragments", "SplitMergeTokenizeWithOffsets",
    "UnicodeScriptTokenizeWithOffsets", "WhitespaceTokenizeWithOffsets",
    "WordpieceTokenizeWithOffsets"})


def load_run(model_dir: str, schema_path: str | None = None, max_len: int | None = None):
    """Loads what an export needs from a training run.

    Args:
        model_dir: str. Training output folder (`encoder.keras`, `schema.yaml`,
            `preprocessing.json`).
        schema_path: str or None. Schema file, for runs without `schema.yaml`.
        max_len: int or None. Events kept per user; defaults to the `max_len` the training
            data was cut to (`preprocessing.json`).

    Returns:
        `(embedder, schema, max_len)`.

    Raises:
        FileNotFoundError: no trained encoder, or no schema.
        ValueError: no max_len given or recorded.
    """
    from autorisk_tf.contract import SCHEMA_FILE
    from autorisk_tf.data.artifacts import PreprocessingOptions
    from autorisk_tf.data.schema import load_schema
    from autorisk_tf.embed import load_embedder

    embedder = load_embedder(model_dir)
    schema_path = schema_path or fileio.join(model_dir, SCHEMA_FILE)
    if not os.path.exists(schema_path):
        raise FileNotFoundError(f"{schema_path} not found: pass --schema (the schema file "
                                "the training data was preprocessed with)")
    if max_len is None:
        max_len = PreprocessingOptions.load(model_dir).max_len
    if not max_len:
        raise ValueError("pass --max_len (the events per user the training data was cut "
                         "to: beam.preprocess --max_len)")
    return embedder, load_schema(schema_path), int(max_len)


def build_archive(embedder, schema, max_len: int, classifier=None):
    """The `keras.export.ExportArchive` with both signatures.

    Args:
        embedder: SequenceEmbedder. Raw parsed events to embeddings.
        schema: Schema. The event schema.
        max_len: int. Most recent events kept per user.
        classifier: SequenceClassifier or None. Adds `score` to the outputs.

    Returns:
        The archive, ready for `write_out`.
    """
    import keras
    import tensorflow as tf

    from autorisk_tf.data import raw_batch, reader
    from autorisk_tf.data import sequence_example as seqex

    def outputs(parsed):
        result = {"embedding": tf.cast(embedder(parsed, training=False)["embedding"],
                                       tf.float32),
                  "length": tf.cast(parsed[seqex.LENGTH], tf.int64)}
        if classifier is not None:
            score = tf.cast(classifier(parsed, training=False), tf.float32)
            result["score"] = score[:, 0] if classifier.classes is None else score
        return result

    def serve_raw(inputs):
        return outputs(raw_batch.parse_raw_batch(inputs, schema, max_len))

    def serve_examples(inputs):
        parsed = reader.parse_batch(inputs[EXAMPLES_INPUT], schema)
        return outputs(raw_batch.truncate_recent(parsed, max_len))

    archive = keras.export.ExportArchive()
    archive.track(embedder)
    if classifier is not None:
        archive.track(classifier)
    archive.add_endpoint(SERVING_DEFAULT, serve_raw,
                         input_signature=[raw_batch.raw_input_specs(schema)])
    archive.add_endpoint(EMBED_EXAMPLES, serve_examples, input_signature=[
        {EXAMPLES_INPUT: tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)}])
    if classifier is not None:
        archive.add_endpoint(EXPLAIN, lambda inputs: explain_outputs(
            classifier, raw_batch.parse_raw_batch(inputs, schema, max_len)),
            input_signature=[raw_batch.raw_input_specs(schema)])
    return archive


def explain_outputs(classifier, parsed: dict) -> dict:
    """The `explain` signature's outputs for a parsed batch.

    Integrated gradients with `EXPLAIN_STEPS` steps, `EXPLAIN_STEPS_PER_PASS` of them in
    one pass (a batch of `EXPLAIN_STEPS_PER_PASS` x B sequences): `score` [B] (the
    probability explained: of the predicted class for a categorical label, whose index is
    `class`), `baseline_score` [B], `attribution` [B, T] and `timestamp_ms` [B, T] of the
    events it belongs to (time-sorted, the most recent `max_len`; 0 at padding),
    `field_attribution` [B, T, F], `completeness_error` [B] and `length` [B].
    """
    import tensorflow as tf

    from autorisk_tf.data import sequence_example as seqex
    from autorisk_tf.explain import integrated_gradients

    result = integrated_gradients(classifier, parsed, EXPLAIN_STEPS, EXPLAIN_STEPS_PER_PASS)
    outputs = {name: tf.cast(result[name], tf.float32) for name in (
        "score", "baseline_score", "attribution", "field_attribution", "completeness_error")}
    outputs["timestamp_ms"] = tf.cast(parsed[seqex.TIMESTAMP], tf.int64)
    outputs["length"] = tf.cast(parsed[seqex.LENGTH], tf.int64)
    if classifier.classes is not None:
        outputs["class"] = result["class_index"]
    return outputs


def next_version(output: str) -> int:
    """The next free integer version under `output` (1 when there is none)."""
    versions = [int(name) for name in (os.listdir(output) if os.path.isdir(output) else [])
                if name.isdigit()]
    return max(versions, default=0) + 1


def sample_request(embedder, schema) -> dict[str, np.ndarray]:
    """A small raw-events request from the model's own vocabularies and boundaries.

    Two users (3 and 2 events, so one is padded) with known values, one unseen category
    and one missing number: the warm-up request, and a check that the signature runs.
    """
    from autorisk_tf.data import raw_batch

    specs = {spec["name"]: spec for spec in embedder.preprocessor.features}
    columns = {}
    for field in schema.fields:
        spec = specs[field.name]
        if field.kind == "numeric":
            known = spec["boundaries"][len(spec["boundaries"]) // 2] if spec["boundaries"] \
                else 1.0
            columns[field.name] = np.array([[known, np.nan, known], [known, known, 0.0]],
                                           np.float32)
        else:
            known = (spec["vocabulary"] or ["x"])[0]
            columns[field.name] = np.char.encode(np.array(
                [[known, "never seen", ""], [known, known, ""]]), "utf-8")
    t0 = 1_700_000_000_000
    columns[raw_batch.TIMESTAMP_INPUT] = np.array(
        [[t0, t0 + 60_000, t0 + 3_600_000], [t0, t0 + 1_000, 0]], np.int64)
    columns[raw_batch.LENGTH_INPUT] = np.array([3, 2], np.int64)
    return columns


def write_warmup(version_dir: str, request: dict[str, np.ndarray], model_name: str) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests`: one PredictionLog for the request.

    Args:
        version_dir: str. The exported version folder.
        request: dict. Input name to array, for `serving_default`.
        model_name: str. The model name TF Serving serves it under.

    Returns:
        The file's path.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    predict = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
        name=model_name, signature_name=SERVING_DEFAULT))
    for name, value in request.items():
        predict.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=predict))
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())
    return path


def graph_op_types(version_dir: str) -> set[str]:
    """Every op type in a SavedModel's graph and function library (calls excluded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops, functions = set(), set()
    for graph in proto.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    return ops - functions


def unsupported_ops(op_types: set[str]) -> list[str]:
    """The op types a stock TF Serving model server lacks: not core TF, not linked TF Text.

    Core TensorFlow is the op set of `tf.raw_ops` (generated from TensorFlow's own op
    registry; libraries such as tensorflow-text register theirs elsewhere).
    """
    import tensorflow as tf

    return sorted(op for op in op_types
                  if not hasattr(tf.raw_ops, op) and op not in SERVING_TEXT_OPS)


def export(model_dir: str, output: str, version: int | None = None,
           classifier_path: str | None = None, max_len: int | None = None,
           schema_path: str | None = None) -> str:
    """Exports a training run as `<output>/<version>/`.

    Args:
        model_dir: str. Training output folder.
        output: str. The model's base path (TF Serving's `--model_base_path`).
        version: int or None. Version number; the next free one by default.
        classifier_path: str or None. A fine-tuned `classifier.keras`: adds `score`.
        max_len: int or None. Events kept per user (see `load_run`).
        schema_path: str or None. Schema file, for runs without `schema.yaml`.

    Returns:
        The version folder written.

    Raises:
        FileExistsError: the version folder exists.
        RuntimeError: the export holds ops a stock model server does not have.
    """
    import keras
    import tensorflow as tf

    import autorisk_tf.finetune  # noqa: F401 - registers SequenceClassifier for loading

    embedder, schema, max_len = load_run(model_dir, schema_path, max_len)
    classifier = keras.models.load_model(classifier_path) if classifier_path else None
    version = version or next_version(output)
    version_dir = os.path.join(output, str(version))
    if os.path.exists(version_dir):
        raise FileExistsError(f"{version_dir} exists: choose another --version")
    archive = build_archive(embedder, schema, max_len, classifier)
    request = sample_request(embedder, schema)
    tmp = version_dir + ".tmp"  # TF Serving must never see a half-written version
    if os.path.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    archive.write_out(tmp, verbose=False)
    loaded = tf.saved_model.load(tmp)
    loaded.signatures[SERVING_DEFAULT](**{k: tf.constant(v) for k, v in request.items()})
    missing = unsupported_ops(graph_op_types(tmp))
    if missing:
        raise RuntimeError(f"the export uses ops a stock TF Serving lacks: {missing}")
    write_warmup(tmp, request, os.path.basename(os.path.normpath(output)))
    with open(os.path.join(tmp, SCHEMA_ASSET), "w", encoding="utf-8") as f:
        f.write(schema.source_text)
    with open(os.path.join(tmp, FINGERPRINT_ASSET), "w", encoding="utf-8") as f:
        f.write(model_fingerprint(model_dir) + "\n")
    with open(os.path.join(tmp, PARTS_ASSET), "w", encoding="utf-8") as f:
        f.write(parts_text(embedding_parts(embedder)) + "\n")
    os.rename(tmp, version_dir)
    return version_dir


def define_flags() -> None:
    """Defines the command-line flags (only when the module runs as a script)."""
    flags.DEFINE_string("model_dir", None, "Training output folder (holds encoder.keras).")
    flags.DEFINE_string("output", None, "Model base path; the version folder goes under it.")
    flags.DEFINE_integer("version", None, "Version number (default: the next free one).")
    flags.DEFINE_string("classifier", None, "A fine-tuned classifier.keras: adds `score`.")
    flags.DEFINE_integer("max_len", None, "Most recent events kept per user (default: the "
                         "max_len the training data was cut to).")
    flags.DEFINE_string("schema", None, "Schema file (default: schema.yaml in --model_dir).")


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    logging.set_verbosity(logging.WARNING)  # the SavedModel writer logs at INFO
    require_flags("model_dir", "output")
    try:
        path = export(FLAGS.model_dir, FLAGS.output, FLAGS.version, FLAGS.classifier,
                      FLAGS.max_len, FLAGS.schema)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    base = os.path.abspath(os.path.dirname(path))
    print(f"wrote {path}\n"
          f"serve it here:  python -m export.serve --model_base_path {base} --port 8501\n"
          f"or with TF Serving:  docker run -p 8501:8501 -v {base}:/models/"
          f"{os.path.basename(base)} -e MODEL_NAME={os.path.basename(base)} "
          "tensorflow/serving")


if __name__ == "__main__":
    define_flags()
    app.run(main)
