r"""Batch embedding of preprocessed users with an exported SavedModel: `python -m beam.embed`.

  python -m beam.embed --model models/autorisk/1 --input 'out/test/*.tfrecord' \
      --output emb/test [--batch_size 64] [--batch_events 16384]
      [Beam pipeline options, e.g. --runner Dataflow...]

Reads the `tf.train.SequenceExample` shards `beam.preprocess` wrote, keys each record by its
user, batches users of similar length together (as training does: a batch is padded to its
longest user, so a short user batched with a long one costs the long one's time), and runs
Beam's RunInference with its TensorFlow model handler (on those batches) on the
SavedModel's `embed_examples` signature: the preprocessing inside the SavedModel is the
training code's, so the vectors equal `autorisk_tf.embed`'s. Writes
`<output>-*.parquet` with the columns `key`, `label_<name>` per label of the records,
`length` (events used) and `embedding` (list of float32). Runs in this process by default,
or on Dataflow (the model path then must be readable by the workers, e.g. gs://).
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor
from apache_beam.transforms.window import GlobalWindows

from autorisk_tf.contract import EMBED_EXAMPLES, FINGERPRINT_METADATA, PARTS_METADATA
from autorisk_tf.data import output_folder
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.fingerprint import parts_text, saved_model_fingerprint, saved_model_parts
from beam import runners
from beam.preprocess import (
    DEAD_LETTER,
    LOCAL_RUNNER,
    UsageError,
    add_verbose_flag,
    dead_letter,
    match_inputs,
    set_log_level,
)

LABEL_PREFIX = "label/"
EXAMPLE_SOURCE = "example"


def embed_examples_inference(model, batch, inference_args, model_id=None):
    """RunInference's `inference_fn`: one batch of users through the signature, as one result.

    A batch the signature rejects (a record the model cannot parse) is retried one example
    at a time, so that only the examples that fail carry an error.

    Args:
        model: the loaded SavedModel.
        batch: sequence of `(user, serialized SequenceExample)` pairs, `user` being
            `(key, label values, path)`.
        inference_args: dict. Unused (no per-call arguments).
        model_id: str or None. The model path, recorded in the result.

    Returns:
        A list of one `PredictionResult`: its example is the batch's users, its inference
        `{"embedding": float32 [n, d], "length": int64 [n], "error": [n] str or None}`
        (an example with an error has zeros for its embedding and length).
    """
    import tensorflow as tf

    del inference_args

    def embed(records):
        outputs = model.signatures[EMBED_EXAMPLES](examples=tf.constant(records))
        return outputs["embedding"].numpy().astype(np.float32), outputs["length"].numpy()

    users = [user for user, _ in batch]
    records = [record for _, record in batch]
    errors = [None] * len(records)
    try:
        vectors, lengths = embed(records)
    except tf.errors.InvalidArgumentError:
        alone = []
        for i, record in enumerate(records):
            try:
                alone.append(embed([record]))
            except tf.errors.InvalidArgumentError as e:
                errors[i] = e.message.split("\n")[0]
                alone.append(None)
        width = next((one[0].shape[1] for one in alone if one), 0)
        vectors = np.stack([one[0][0] if one else np.zeros(width, np.float32)
                            for one in alone])
        lengths = np.array([one[1][0] if one else 0 for one in alone], np.int64)
    return [PredictionResult(users, {"embedding": vectors, "length": lengths,
                                     "error": errors}, model_id)]


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
    """`(path, serialized example)` to `(length, ((key, label values, path), example))`.

    The label values (in the order of `labels`) and the file travel with the key; the length
    (events in the record) picks the batch. A record that is not a SequenceExample of
    `beam.preprocess`, with a key and at least one event, goes to the `dead_letter` output.
    """

    def __init__(self, labels: dict[str, str]):
        self._labels = labels

    def process(self, element):
        import tensorflow as tf
        from google.protobuf.message import DecodeError

        path, record = element
        try:
            context = tf.train.Features.FromString(seqex.context_bytes(record)).feature
        except (DecodeError, ValueError) as e:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                EXAMPLE_SOURCE, path, None, "not_a_sequence_example", str(e), record[:64].hex()))
            return
        key = context[seqex.KEY].bytes_list.value if seqex.KEY in context else []
        length = context[seqex.LENGTH].int64_list.value if seqex.LENGTH in context else []
        if not key or not length or length[0] < 1:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                EXAMPLE_SOURCE, path, None, "no_key_or_events",
                "the record's context lacks a key or a positive length",
                key[0].decode("utf-8", "replace") if key else record[:64].hex()))
            return
        labels = {}
        for name, kind in self._labels.items():
            feature = context.get(LABEL_PREFIX + name)
            if kind == "string":
                labels[name] = feature.bytes_list.value[0].decode("utf-8") if feature else ""
            else:
                labels[name] = float(feature.float_list.value[0]) if feature else float("nan")
        yield length[0], ((key[0].decode("utf-8"), tuple(labels.values()), path), record)


# Length buckets: a batch holds users whose lengths fall between two neighbouring bounds.
LENGTH_BOUNDS = tuple(sorted({int(2 ** (k / 2)) for k in range(8, 32)}))


class LengthBatches(beam.DoFn):
    """`(length, keyed example)` elements to batches of users of similar length.

    Keeps one open batch per length bucket and emits it when it holds `batch_size` users or
    `batch_events` events (counted at the bucket's upper bound, the padded length); what is
    left is emitted at the end of the bundle. At most one batch per bucket is held.

    Args:
        batch_size: int. Most users in a batch.
        batch_events: int. Most padded events in a batch (at least one user per batch).
    """

    def __init__(self, batch_size: int, batch_events: int):
        self._batch_size = batch_size
        self._batch_events = batch_events
        self._open = {}

    def capacity(self, length: int) -> int:
        """Users per batch for users of this length."""
        bound = LENGTH_BOUNDS[min(bisect.bisect_left(LENGTH_BOUNDS, length),
                                  len(LENGTH_BOUNDS) - 1)]
        return max(1, min(self._batch_size, self._batch_events // max(bound, length)))

    def start_bundle(self):
        self._open = {}

    def process(self, element):
        length, keyed = element
        bucket = bisect.bisect_left(LENGTH_BOUNDS, length)
        batch = self._open.setdefault(bucket, [])
        batch.append(keyed)
        if len(batch) >= self.capacity(length):
            del self._open[bucket]
            yield batch

    def finish_bundle(self):
        for batch in self._open.values():
            yield GlobalWindows.windowed_value_at_end_of_window(batch)
        self._open = {}


_USERS = beam.metrics.Metrics.counter("embed", "users")


class ToTableFn(beam.DoFn):
    """A batch's `PredictionResult` to one Arrow table of its users, and dead letters.

    Args:
        schema: pa.Schema. The output table's schema (`parquet_schema`).
    """

    def __init__(self, schema: pa.Schema):
        self._schema = schema

    def process(self, result):
        users, inference = result.example, result.inference
        keep = []
        for i, error in enumerate(inference["error"]):
            if error is None:
                keep.append(i)
                continue
            key, _, path = users[i]
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                EXAMPLE_SOURCE, path, None, "rejected_by_model", error, key))
        if not keep:
            return
        _USERS.inc(len(keep))
        vectors = inference["embedding"][keep]
        labels = [users[i][1] for i in keep]
        columns = ([[users[i][0] for i in keep]]
                   + [[values[j] for values in labels]
                      for j in range(len(self._schema) - 3)]
                   + [inference["length"][keep],
                      pa.ListArray.from_arrays(
                          np.arange(len(keep) + 1, dtype=np.int32) * vectors.shape[1],
                          pa.array(vectors.reshape(-1)))])
        yield pa.Table.from_arrays(columns, schema=self._schema)


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
                        help="Most users in a batch sent to the model.")
    parser.add_argument("--batch_events", type=int, default=16384,
                        help="Most events in a batch, each user counted at the padded "
                             "length of its length bucket (powers of two); short users go "
                             "in batches of up to --batch_size.")
    parser.add_argument("--num_shards", type=int, default=1, help="Parquet shards.")
    add_verbose_flag(parser)
    runners.add_dask_workers_flag(parser)
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
    for flag in ("batch_size", "batch_events"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be positive, got {getattr(args, flag)}")
    beam_args = runners.runner_args(beam_args)
    if not any(a.startswith("--runner") for a in beam_args):
        beam_args = [f"--runner={LOCAL_RUNNER}", *beam_args]
    labels = label_columns(paths[0])
    handler = SavedModelHandler(args.model,
                                inference_fn=embed_examples_inference).with_no_batching()
    schema = parquet_schema(labels, saved_model_fingerprint(args.model),
                            saved_model_parts(args.model))
    with runners.pipeline_on(beam_args, args.dask_workers, save_main_session) as pipeline:
        keyed = (pipeline
                 | "Files" >> beam.Create(paths)
                 | "Read" >> beam.io.ReadAllFromTFRecord(with_filename=True)
                 | "Key" >> beam.ParDo(KeyedExampleFn(labels)).with_outputs(
                     DEAD_LETTER, main="keyed"))
        rows = (keyed.keyed
                | "Batch" >> beam.ParDo(LengthBatches(args.batch_size, args.batch_events))
                | "Embed" >> RunInference(handler)
                | "Table" >> beam.ParDo(ToTableFn(schema)).with_outputs(DEAD_LETTER,
                                                                         main="rows"))
        _ = ((keyed[DEAD_LETTER], rows[DEAD_LETTER]) | "DeadLetters" >> beam.Flatten()
             | "WriteDeadLetters" >> beam.io.WriteToText(
                 f"{args.output}-{DEAD_LETTER}", file_name_suffix=".jsonl", num_shards=1))
        _ = (rows.rows
             | "Write" >> beam.io.WriteToParquetBatched(
                 args.output, schema, file_name_suffix=".parquet",
                 num_shards=args.num_shards))
        pipeline.run().wait_until_finish()
    return embedded_users(args.output, args.num_shards)


def embedded_users(output: str, num_shards: int) -> int:
    """Users a run wrote: the rows of its `<output>-SSSSS-of-NNNNN.parquet` files.

    Counted from the files' footers rather than the job's metrics, which not every runner
    reports.

    Args:
        output: str. The run's `--output` prefix.
        num_shards: int. Its `--num_shards` (NNNNN); 0 (the runner chose): any count.

    Returns:
        The number of rows in those files.
    """
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    shards = f"{num_shards:05d}" if num_shards else "*"
    total = 0
    for match in FileSystems.match([f"{output}-*-of-{shards}.parquet"])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def dead_letters(output: str) -> dict[str, int]:
    """Records a run rejected, counted by reason, from its `<output>-dead_letter-*.jsonl`."""
    from apache_beam.io.filesystems import FileSystems

    counts = {}
    for match in FileSystems.match([f"{output}-{DEAD_LETTER}-*.jsonl"])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            for line in f:
                reason = json.loads(line)["reason"]
                counts[reason] = counts.get(reason, 0) + 1
    return counts


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
    rejected = dead_letters(args.output)
    if rejected:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items()))
        print(f"rejected {sum(rejected.values())} records ({reasons}): "
              f"{args.output}-{DEAD_LETTER}-*.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
