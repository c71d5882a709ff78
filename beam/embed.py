r"""Batch embedding of preprocessed users with an exported SavedModel: `python -m beam.embed`.

  python -m beam.embed --model models/autorisk/1 --input 'out/test/*.tfrecord' \
      --output emb/test [--batch_size 64] [Beam pipeline options, e.g. --runner Dataflow...]

Reads the `tf.train.SequenceExample` shards `beam.preprocess` wrote, keys each record by its
user, and runs Beam's RunInference with its TensorFlow model handler (keyed) on the
SavedModel's `embed_examples` signature: the preprocessing inside the SavedModel is the
training code's, so the vectors equal `autorisk_tf.embed`'s. Writes
`<output>-*.parquet` with the columns `key`, `label_<name>` per label of the records,
`length` (events used) and `embedding` (list of float32). Runs in this process by default,
or on Dataflow (the model path then must be readable by the workers, e.g. gs://).
"""

from __future__ import annotations

import argparse
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from autorisk_tf.contract import EMBED_EXAMPLES, FINGERPRINT_METADATA, PARTS_METADATA
from autorisk_tf.data import output_folder
from autorisk_tf.data.fingerprint import parts_text, saved_model_fingerprint, saved_model_parts
from beam.preprocess import (
    LOCAL_RUNNER,
    UsageError,
    add_verbose_flag,
    match_inputs,
    set_log_level,
)

LABEL_PREFIX = "label/"


def embed_examples_inference(model, batch, inference_args, model_id=None):
    """RunInference's `inference_fn`: a batch of serialized examples through the signature.

    Args:
        model: the loaded SavedModel.
        batch: sequence of scalar string tensors (serialized SequenceExamples).
        inference_args: dict. Unused (no per-call arguments).
        model_id: str or None. The model path, recorded in the results.

    Returns:
        One `PredictionResult` per example; its inference is `{"embedding", "length"}`.
    """
    import tensorflow as tf

    del inference_args
    outputs = model.signatures[EMBED_EXAMPLES](examples=tf.stack(batch))
    vectors, lengths = outputs["embedding"].numpy(), outputs["length"].numpy()
    return [PredictionResult(example, {"embedding": vectors[i], "length": int(lengths[i])},
                             model_id) for i, example in enumerate(batch)]


class SavedModelHandler(TFModelHandlerTensor):
    """Beam's TensorFlow model handler, loading a plain SavedModel (not a Keras file).

    The stock handler loads through `tf.keras.models.load_model`, which Keras 3 keeps for
    `.keras` files; an exported SavedModel is loaded with `tf.saved_model.load` and called
    through its signature.
    """

    def load_model(self):
        """Loads the SavedModel at the handler's model path."""
        import tensorflow as tf

        return tf.saved_model.load(self._model_uri)


def label_columns(path: str) -> dict[str, str]:
    """Label names and kinds (`float` or `string`) in the context of a shard's first record."""
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(path).take(1):
        context = tf.train.SequenceExample.FromString(record.numpy()).context.feature
        return {name[len(LABEL_PREFIX):]: "string" if feature.HasField("bytes_list")
                else "float" for name, feature in sorted(context.items())
                if name.startswith(LABEL_PREFIX)}
    return {}


class KeyedExampleFn(beam.DoFn):
    """Serialized example to `(key, (tensor, labels))`; the labels travel with the key."""

    def __init__(self, labels: dict[str, str]):
        self._labels = labels

    def process(self, record: bytes):
        import tensorflow as tf

        context = tf.train.SequenceExample.FromString(record).context.feature
        key = context["key"].bytes_list.value[0].decode("utf-8")
        labels = {}
        for name, kind in self._labels.items():
            feature = context.get(LABEL_PREFIX + name)
            if kind == "string":
                labels[name] = feature.bytes_list.value[0].decode("utf-8") if feature else ""
            else:
                labels[name] = float(feature.float_list.value[0]) if feature else float("nan")
        yield (key, tuple(sorted(labels.items()))), tf.constant(record)


_USERS = beam.metrics.Metrics.counter("embed", "users")


def to_row(keyed: tuple) -> dict:
    """`((key, labels), PredictionResult)` to one output row."""
    (key, labels), result = keyed
    _USERS.inc()
    return {"key": key, **{f"label_{name}": value for name, value in labels},
            "length": result.inference["length"],
            "embedding": np.asarray(result.inference["embedding"], np.float32).tolist()}


def parquet_schema(labels: dict[str, str], model: str = "", parts: list | None = None,
                   ) -> pa.Schema:
    """The output table's columns, with the model's fingerprint and parts in the metadata."""
    return pa.schema([("key", pa.string())]
                     + [(f"label_{n}", pa.string() if k == "string" else pa.float64())
                        for n, k in labels.items()]
                     + [("length", pa.int64()), ("embedding", pa.list_(pa.float32()))],
                     metadata={FINGERPRINT_METADATA: model.encode(),
                               PARTS_METADATA: parts_text(parts).encode()})


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (Beam pipeline options pass through)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="An exported version folder, e.g. models/autorisk/1.")
    parser.add_argument("--input", required=True,
                        help="TFRecord shards of beam.preprocess (glob, or several "
                             "comma-separated).")
    parser.add_argument("--output", required=True,
                        help="Output prefix; shards are <output>-*.parquet.")
    parser.add_argument("--batch_size", type=int, default=64,
                        help="Largest batch RunInference sends to the model.")
    parser.add_argument("--num_shards", type=int, default=1, help="Parquet shards.")
    add_verbose_flag(parser)
    return parser


def run(argv=None, save_main_session=True) -> int:
    """Runs the batch-embedding job.

    Returns:
        The number of users embedded.

    Raises:
        UsageError: no input matches, or the model folder is not a SavedModel.
    """
    from apache_beam.io.filesystems import FileSystems

    args, beam_args = build_parser().parse_known_args(argv)
    paths = match_inputs(args.input)
    try:
        output_folder.check_shards(paths)
    except output_folder.OutputFolderError as e:
        raise UsageError(str(e)) from None
    if not FileSystems.exists(f"{args.model.rstrip('/')}/saved_model.pb"):
        raise UsageError(f"{args.model} holds no saved_model.pb: pass a version folder "
                         "written by python -m export.savedmodel")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {args.batch_size}")
    if not any(a.startswith("--runner") for a in beam_args):
        beam_args = [f"--runner={LOCAL_RUNNER}", *beam_args]
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    labels = label_columns(paths[0])
    handler = KeyedModelHandler(SavedModelHandler(
        args.model, inference_fn=embed_examples_inference, max_batch_size=args.batch_size))
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | "Files" >> beam.Create(paths)
         | "Read" >> beam.io.ReadAllFromTFRecord()
         | "Key" >> beam.ParDo(KeyedExampleFn(labels))
         | "Embed" >> RunInference(handler)
         | "Row" >> beam.Map(to_row)
         | "Write" >> beam.io.WriteToParquet(
             args.output, parquet_schema(labels, saved_model_fingerprint(args.model),
                                         saved_model_parts(args.model)),
             file_name_suffix=".parquet",
             num_shards=args.num_shards))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("users"))
    return sum(c.committed or c.attempted or 0 for c in counters["counters"])


def main(argv=None) -> int:
    """Command-line entry point; one line on errors."""
    set_log_level(argv)
    args, _ = build_parser().parse_known_args(argv)
    try:
        users = run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"embedded {users} users into {args.output}-*.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
