r"""Raw event tables to per-user `tf.train.SequenceExample` TFRecords: `python -m beam.preprocess`.

  python -m beam.preprocess --input 'events/*.csv' --schema schema.yaml \
      --labels labels.csv --output_dir out/ [--max_len 4096] [--window_stride 1024] \
      [Beam pipeline options, e.g. --runner DataflowRunner --project ... --region ...]

Steps: validate and parse every row (bad rows go to `dead_letter/` with a reason); group by
key; sort by timestamp (stable: ties keep input order); keep the most recent `max_len` events
or cut long histories into overlapping windows; derive time features; join the labels; write
`train/`, `valid/` and `test/` shards (split by a stable hash of the key); analyse the training
split into `artifacts/` (schema copy, vocabularies, boundaries, stats.json).

Exit status 1 when more than `--max_rejected_fraction` (default 0.05) of the event rows were
rejected, or no user was written: dead letters and stats.json are written first, and the
error line gives the count and first example of each reason. Exit status 2: a bad command
line, schema or input header, before any row is read.

Without `--runner` the job runs in this process (Beam's FnApiRunner, the engine of the
DirectRunner, chosen explicitly: plain DirectRunner first tries to download Prism); add
`--direct_running_mode multi_processing --direct_num_workers N` for several local processes.
Local runs group by key through partitioned temporary files (`beam/file_shuffle.py`), so
memory stays bounded; other runners use Beam's GroupByKey (`--shuffle` chooses).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import operator
import os
import sys
import zlib
from collections import Counter, defaultdict

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from autorisk_tf.data import artifacts, events, output_folder
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.schema import Schema, SchemaError, load_schema, parse_schema
from beam import analysis, file_shuffle, runners, sources

DEAD_LETTER = "dead_letter"
SUMMARY = "summary"
COUNTS = "counts"  # ((table, value), count) of the training split, see analysis.TopValues
NUMBERS = "numbers"  # ((field, category), [values]) of the training split, see NumberSummaries
_ORDER_BITS = 40  # an event's input order: file index << 40 | line
# The in-process runner. Plain DirectRunner first tries to download the Prism runner binary,
# which fails (slowly) without network.
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"
# Local input from this size up runs in one worker process per core (worker start-up costs
# a few seconds, more than a small input takes).
PARALLEL_INPUT_BYTES = 64 * 2**20


class UsageError(ValueError):
    """A bad command line or input path: reported as one line, exit status 2."""


def dead_letter(source: str, path: str, line: int | None, reason: str, detail: str,
                raw: str) -> str:
    """One dead-letter record, a JSON line: where it came from, why, and the raw input.

    Args:
        source: str. What was read: `events`, `labels`, `label_cell` or `example`.
        path: str. The input file.
        line: int or None. The row's line in the file (None where the reader has none).
        reason: str. A short reason name, counted in the job's statistics.
        detail: str. The reason in words.
        raw: str. The input itself (or what identifies it).

    Returns:
        The JSON text.
    """
    return json.dumps({"source": source, "file": path, "line": line, "reason": reason,
                       "detail": detail, "raw": raw}, ensure_ascii=False)


class ParseEventsFn(beam.DoFn):
    """Parses one event file into per-key event batches, dead letters and a summary.

    Rows are parsed in chunks. The events of one key within a chunk become one columnar
    batch `(timestamps, orders, columns)` (`orders` keeps the input order of equal
    timestamps), so the shuffle moves far fewer elements than rows; with the file shuffle a
    whole chunk goes to the partition files at once. Counts for the vocabularies (the
    `COUNTS` output) and the numbers for the bucket boundaries and scales (the `NUMBERS`
    output), per chunk, are taken from rows whose key falls in the training split.

    Args:
        schema_text: str. The schema YAML (a string pickles anywhere).
        fmt: str. Input format or `auto`.
        fractions: tuple of float. Split fractions.
        chunk_rows: int. Rows per chunk.
        spill: file_shuffle.Spill or None. Write the chunks to partition files instead of
            emitting batches (the `files` shuffle).
        window: tuple of int or None. Plausible event times (see `events.RowParser`),
            fixed on the driver so that every worker applies the same window.
    """

    def __init__(self, schema_text: str, fmt: str, fractions: tuple, chunk_rows: int = 50_000,
                 spill: file_shuffle.Spill | None = None,
                 window: tuple[int, int] | None = None):
        self._schema_text = schema_text
        self._window = window or events.time_window()
        self._fmt = fmt
        self._fractions = fractions
        self._chunk_rows = chunk_rows
        self._spill = spill
        self._rows = Metrics.counter("preprocess", "rows_in")
        self._rejected = Metrics.counter("preprocess", "rows_rejected")

    def setup(self):
        self._schema = parse_schema(self._schema_text)
        self._parser = events.RowParser(self._schema, self._window)

    def process(self, element):
        file_index, path = element
        fmt = sources.detect_format(path) if self._fmt == "auto" else self._fmt
        summary = analysis.FileSummary()
        writer = self._spill and file_shuffle.SpillWriter(
            self._spill, file_shuffle.EVENTS, f"f{file_index:05d}", events_spill_schema(
                self._schema))
        base = file_index << _ORDER_BITS
        chunk = ([], [], [], [])  # keys, timestamps, orders, rows
        parse = self._parser.parse
        key_column = self._schema.key
        for raw in sources.read_rows(path, fmt, self._schema.csv_delimiter):
            if raw.blank:
                summary.blank_lines += 1
                continue
            summary.rows_in += 1
            if raw.row is not None:
                try:
                    key, ts_ms, values = parse(raw.row)
                    raw_key = raw.row[key_column]
                    if raw_key.__class__ is str and len(raw_key) != len(key):
                        summary.keys_stripped += 1
                except events.RejectedRow as e:
                    raw.reason, raw.detail = e.reason, e.detail
            if raw.reason:
                summary.rejected[raw.reason] += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                    "events", path, raw.line, raw.reason, raw.detail, sources.raw_text(raw)))
                continue
            chunk[0].append(key)
            chunk[1].append(ts_ms)
            chunk[2].append(base | raw.line)
            chunk[3].append(values)
            if len(chunk[0]) >= self._chunk_rows:
                yield from self._flush(chunk, summary, writer)
                chunk = ([], [], [], [])
        yield from self._flush(chunk, summary, writer)
        if writer:
            writer.close()
        self._rows.inc(summary.rows_in)
        self._rejected.inc(sum(summary.rejected.values()))
        logging.info("parsed %s: %d rows, %d rejected", path, summary.rows_in,
                     sum(summary.rejected.values()))
        yield beam.pvalue.TaggedOutput(SUMMARY, summary)

    def _flush(self, chunk, summary, writer):
        """Summarises a chunk's training rows; writes or yields its events by key."""
        keys, timestamps, orders, rows = chunk
        if not keys:
            return
        latest = max(timestamps)
        if summary.last_timestamp_ms is None or latest > summary.last_timestamp_ms:
            summary.last_timestamp_ms = latest
        train = {key: events.split_of(key, self._fractions) == 0 for key in set(keys)}
        train_rows = [row for key, row in zip(keys, rows, strict=True) if train[key]]
        yield from self._summarise(_columns(train_rows, len(self._schema.fields)))
        if writer:
            writer.write(keys, [timestamps, orders, *_columns(rows, len(self._schema.fields))])
            return
        index = defaultdict(list)
        for i, key in enumerate(keys):
            index[key].append(i)
        for key, rows_of_key in index.items():
            yield key, ([timestamps[i] for i in rows_of_key], [orders[i] for i in rows_of_key],
                        _columns([rows[i] for i in rows_of_key], len(self._schema.fields)))

    def _summarise(self, train_values):
        """Yields a chunk's value and token counts and its numbers.

        The counts are `COUNTS` elements `((table, value), count)`, one per distinct value
        of the chunk; the numbers are `NUMBERS` elements (`analysis.number_batches`).
        """
        columns = dict(zip(self._schema.field_names, train_values, strict=True))
        for field, column in zip(self._schema.fields, train_values, strict=True):
            if field.kind == "numeric":
                for batch in analysis.number_batches(
                        field.name, np.asarray(column, np.float64),
                        columns[field.bucket_by] if field.bucket_by else None):
                    yield beam.pvalue.TaggedOutput(NUMBERS, batch)
                continue
            cells = Counter(column)
            if field.kind == "categorical":
                table = analysis.vocab_table(field.name)
                counts = artifacts.count_values(cells, field.separator)
            else:
                table, counts = analysis.token_table(field.name), Counter()
                for text, count in cells.items():
                    for token, n in Counter(artifacts.tokenize(text, field.tokenizer)).items():
                        counts[token] += n * count
            for value, count in counts.items():
                yield beam.pvalue.TaggedOutput(COUNTS, ((table, value), count))


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Rows of `width` values to `width` columns (empty ones when there is no row)."""
    return [list(map(operator.itemgetter(i), rows)) for i in range(width)]


def events_spill_schema(schema: Schema):
    """The file shuffle's columns for events: timestamp, input order, then each field."""
    return file_shuffle.arrow_schema(
        [("timestamp", "int"), ("order", "int")]
        + [(f"f{i}", "float" if field.kind == "numeric" else "str")
           for i, field in enumerate(schema.fields)])


def labels_spill_schema(schema: Schema):
    """The file shuffle's columns for labels: file, line, then each label."""
    return file_shuffle.arrow_schema(
        [("file", "str"), ("line", "int")]
        + [(label.name, "str" if label.kind == "categorical" else "float")
           for label in schema.labels])


def sorted_history(batches, schema: Schema) -> tuple[np.ndarray, list]:
    """A key's events from its batches, sorted by timestamp, ties by input order.

    Args:
        batches: iterable of `(timestamps, orders, columns)`. The key's event batches, in any
            order (one per chunk from `ParseEventsFn`, or one sorted batch per key from the
            file shuffle).
        schema: Schema. The event schema (the columns follow its fields).

    Returns:
        `(timestamps, columns)`: an int64 array [n], and per field its n values in that
        order (a float64 array for numeric fields, a list of str otherwise).
    """
    batches = list(batches)
    timestamps = np.concatenate([np.asarray(b[0], np.int64) for b in batches])
    orders = np.concatenate([np.asarray(b[1], np.int64) for b in batches])
    order = np.lexsort((orders, timestamps))
    shuffled = bool(np.any(order != np.arange(order.size)))
    columns = []
    for i, field in enumerate(schema.fields):
        if field.kind == "numeric":
            values = np.concatenate([np.asarray(b[2][i], np.float64) for b in batches])
            columns.append(values[order] if shuffled else values)
        else:
            values = [v for b in batches for v in b[2][i]] if len(batches) > 1 else list(
                batches[0][2][i])
            columns.append([values[j] for j in order] if shuffled else values)
    return timestamps[order] if shuffled else timestamps, columns


class ParseLabelsFn(beam.DoFn):
    """Parses the label table into `(key, (file, line, labels))`, dead letters and a summary.

    Args:
        schema_text: str. The schema YAML.
        fmt: str. Input format or `auto`.
        spill: file_shuffle.Spill or None. Write the labels to partition files instead of
            emitting them (the `files` shuffle).
        delimiter: str. CSV delimiter of the label files.
        chunk_rows: int. Label rows per write to the partition files.
    """

    def __init__(self, schema_text: str, fmt: str, spill: file_shuffle.Spill | None = None,
                 delimiter: str = ",", chunk_rows: int = 50_000):
        self._schema_text = schema_text
        self._fmt = fmt
        self._spill = spill
        self._delimiter = delimiter
        self._chunk_rows = chunk_rows

    def setup(self):
        self._schema = parse_schema(self._schema_text)

    def process(self, path):
        schema = self._schema
        fmt = sources.detect_format(path) if self._fmt == "auto" else self._fmt
        summary = analysis.FileSummary()
        writer = self._spill and file_shuffle.SpillWriter(
            self._spill, file_shuffle.LABELS, f"l{zlib.crc32(path.encode('utf-8')):08x}",
            labels_spill_schema(schema))
        keys, rows = [], []
        for raw in sources.read_rows(path, fmt, delimiter=self._delimiter):
            if raw.blank:
                summary.blank_lines += 1
                continue
            summary.rows_in += 1
            if raw.row is not None:
                key = raw.row.get(schema.label_key)
                if events.is_missing(key):
                    raw.reason, raw.detail = (events.MISSING_KEY,
                                              f"column {schema.label_key!r} is empty")
            if not raw.reason:
                # A bad cell makes that label missing for the key; the other labels stay.
                labels = {}
                for label in schema.labels:
                    try:
                        labels[label.name] = events.parse_label(raw.row.get(label.name),
                                                                label.kind, label.name)
                    except events.RejectedRow as e:
                        labels[label.name] = events.parse_label(None, label.kind, label.name)
                        summary.cells_rejected[label.name] += 1
                        yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                            "label_cell", path, raw.line, e.reason, e.detail,
                            sources.raw_text(raw)))
            if raw.reason:
                summary.rejected[raw.reason] += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                    "labels", path, raw.line, raw.reason, raw.detail, sources.raw_text(raw)))
                continue
            stripped = str(key).strip()
            summary.keys_stripped += key.__class__ is str and len(key) != len(stripped)
            key = stripped
            if not writer:
                yield key, (path, raw.line, labels)
                continue
            keys.append(key)
            rows.append((path, raw.line, *labels.values()))
            if len(keys) >= self._chunk_rows:
                writer.write(keys, _columns(rows, 2 + len(schema.labels)))
                keys, rows = [], []
        if writer:
            writer.write(keys, _columns(rows, 2 + len(schema.labels)))
            writer.close()
        yield beam.pvalue.TaggedOutput(SUMMARY, summary)


def window_slices(n: int, max_len: int, stride: int) -> list[tuple[int, int]]:
    """Slices `[start, end)` of a history of n events to write as examples.

    Args:
        n: int. History length.
        max_len: int. Longest example.
        stride: int. 0 keeps only the most recent `max_len` events; otherwise windows of
            `max_len` start every `stride` events, and the last one ends at the last event.

    Returns:
        The slices, oldest first.
    """
    if n <= max_len:
        return [(0, n)]
    if not stride:
        return [(n - max_len, n)]
    starts = list(range(0, n - max_len, stride)) + [n - max_len]
    return [(s, s + max_len) for s in starts]


def repeated_events(timestamps: np.ndarray, columns: list) -> np.ndarray:
    """Which events repeat an earlier one exactly (same time and every value).

    Args:
        timestamps: int64 array [n]. A key's event times, sorted (`sorted_history`).
        columns: list. Per field the n values (float arrays or lists of str).

    Returns:
        bool array [n]: True for every copy after the first of an exact duplicate event.
    """
    repeated = np.zeros(len(timestamps), dtype=bool)
    same_time = np.flatnonzero(np.diff(timestamps) == 0) + 1
    if not same_time.size:  # the common case: no two events share a time
        return repeated
    seen: dict[tuple, None] = {}
    for index in sorted(set(same_time) | set(same_time - 1)):
        # NaN != NaN: missing numbers are compared by their text
        event = (int(timestamps[index]),) + tuple(
            "nan" if isinstance(column[index], float) and column[index] != column[index]
            else column[index] for column in columns)
        repeated[index] = event in seen
        seen[event] = None
    return repeated


class BuildSequencesFn(beam.DoFn):
    """Sorts a key's events, cuts them to examples and serialises them, tagged by split.

    Args:
        schema_text: str. The schema YAML.
        fractions: tuple of float. Split fractions.
        max_len: int. Longest example.
        window_stride: int. 0 for the most recent events only, else the window stride.
        drop_duplicates: bool. Drop exact duplicate events (counted as `duplicate_event`
            rejections); otherwise they are kept and counted.
    """

    def __init__(self, schema_text: str, fractions: tuple, max_len: int, window_stride: int,
                 drop_duplicates: bool = False):
        self._schema_text = schema_text
        self._fractions = fractions
        self._max_len = max_len
        self._stride = window_stride
        self._drop_duplicates = drop_duplicates

    def setup(self):
        self._schema = parse_schema(self._schema_text)

    def process(self, element):
        key, grouped = element
        summary = analysis.SequenceSummary()
        batches = list(grouped["events"])
        # A key's label rows: the first by (file, line) wins; each other one is a dead letter
        # that names both places.
        label_rows = sorted(grouped["labels"], key=lambda row: (row[0], row[1]))
        labels = None
        if label_rows:
            first_file, first_line, labels = label_rows[0]
            for path, line, _ in label_rows[1:]:
                summary.label_duplicates += 1
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                    "labels", path, line, events.DUPLICATE_LABEL_KEY,
                    f"key {key!r} already has labels at {first_file} line {first_line} "
                    "(the first by file, then line, wins)", key))
        if not batches:
            summary.label_keys_without_events += 1
            yield beam.pvalue.TaggedOutput(SUMMARY, summary)
            return
        timestamps, columns = sorted_history(batches, self._schema)
        repeated = repeated_events(timestamps, columns)
        summary.duplicate_events = int(repeated.sum())
        if self._drop_duplicates and summary.duplicate_events:
            kept = np.flatnonzero(~repeated)
            timestamps = timestamps[kept]
            columns = [column[kept] if isinstance(column, np.ndarray)
                       else [column[i] for i in kept] for column in columns]
            summary.duplicates_dropped = summary.duplicate_events
        n = len(timestamps)
        derived = events.time_features(timestamps, self._schema.time_features)
        split = analysis.SPLITS[events.split_of(key, self._fractions)]
        slices = window_slices(n, self._max_len, self._stride)
        covered = np.zeros(n, dtype=bool)
        for index, (start, end) in enumerate(slices):
            covered[start:end] = True
            yield beam.pvalue.TaggedOutput(split, ((key, index), seqex.encode_sequence(
                self._schema, key, timestamps[start:end],
                [column[start:end] for column in columns],
                {name: values[start:end] for name, values in derived.items()},
                labels=labels, window_index=index, num_events_total=n)))
        used = int(covered.sum())
        summary.users[split] += 1
        summary.examples[split] += len(slices)
        summary.events_used += used
        summary.events_truncated += n - used
        summary.users_with_labels += labels is not None
        summary.lengths[n] += 1
        yield beam.pvalue.TaggedOutput(SUMMARY, summary)


class WriteArtifactsFn(beam.DoFn):
    """Builds and writes `artifacts/` from the merged summaries (runs once)."""

    def __init__(self, schema_text: str, options: dict):
        self._schema_text = schema_text
        self._options = options

    def process(self, artifacts_dir, files, sequences, top, numbers, labels=None):
        built = analysis.build_artifacts(parse_schema(self._schema_text), files, sequences,
                                         labels, self._options, top, numbers)
        built.save(artifacts_dir)
        yield built.stats


def _parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-6 or parts[0] <= 0:
        raise UsageError(f"--split must be three fractions train,valid,test summing to 1 "
                         f"with train > 0, got {text!r}")
    return parts


def check_input_columns(paths: list[str], input_format: str, schema, labels: bool = False,
                        delimiter: str = ",") -> None:
    """Checks every file's columns against the schema before the pipeline reads a row.

    Args:
        paths: list of str. The event files (or label files with `labels`).
        input_format: str. `auto` or one of `sources.FORMATS`.
        schema: Schema. The schema.
        labels: bool. The files are label tables: their key and label columns are checked.
        delimiter: str. CSV delimiter of label tables (events use the schema's).

    Raises:
        UsageError: a missing column (file, column, its use, the columns there, a close
            match), or a file whose format cannot be told.
    """
    if labels:
        required = {schema.label_key: "the label table's key"}
        required.update({label.name: f"label {label.name!r}" for label in schema.labels})
    else:
        required = {schema.key: "the key", schema.timestamp_column: "the timestamp"}
        for field in schema.fields:
            required.setdefault(field.column, f"field {field.name!r}")
        delimiter = schema.csv_delimiter
    for path in paths:
        try:
            fmt = sources.detect_format(path) if input_format == "auto" else input_format
            sources.check_columns(path, fmt, required, delimiter)
        except (ValueError, OSError) as e:
            raise UsageError(str(e)) from None
    if not labels and paths:
        first = itertools.islice((raw.row for raw in sources.read_rows(
            paths[0], sources.detect_format(paths[0]) if input_format == "auto"
            else input_format, delimiter) if raw.row), 1000)
        error = events.epoch_unit_error([row.get(schema.timestamp_column) for row in first],
                                        schema.timestamp_format, schema.timestamp_column)
        if error:
            raise UsageError(f"{paths[0]}: {error}")


def match_inputs(patterns: str) -> list[str]:
    """Expands comma-separated glob patterns into a sorted list of files.

    Args:
        patterns: str. One or more patterns, comma-separated (local or gs://).

    Returns:
        The matched paths, sorted (their index orders events with equal timestamps).

    Raises:
        UsageError: a pattern matches no file or cannot be read.
    """
    paths = []
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        try:
            matched = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        except Exception as e:  # noqa: BLE001 - filesystems raise many kinds
            raise UsageError(f"cannot read input {pattern!r}: {e}") from None
        if not matched:
            raise UsageError(f"input {pattern!r} matches no file")
        paths.extend(matched)
    if not paths:
        raise UsageError("--input names no file")
    return sorted(set(paths))


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the flags every job over event files has.

    They are `--input`, `--schema`, `--output_dir`, `--overwrite` and the plausible time
    window (`--earliest_time`, `--latest_time`).
    """
    parser.add_argument("--input", required=True,
                        help="Event files: glob pattern(s), comma-separated, local or gs://.")
    parser.add_argument("--schema", required=True, help="Schema YAML file.")
    parser.add_argument("--output_dir", required=True,
                        help="Output folder: absent or empty, unless --overwrite.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the output folder if it holds files (a local one is "
                             "replaced only once the new output is complete).")
    add_time_window_flags(parser)


def claim_output(output_dir: str, overwrite: bool) -> str:
    """`output_folder.claim` with its error as a `UsageError` (exit 2, one line)."""
    try:
        return output_folder.claim(output_dir, overwrite)
    except output_folder.OutputFolderError as e:
        raise UsageError(str(e)) from None


def add_time_window_flags(parser: argparse.ArgumentParser) -> None:
    """Adds `--earliest_time` and `--latest_time`, the window of plausible event times."""
    parser.add_argument("--earliest_time", default=None,
                        help="Events before this time (ISO 8601 or epoch number) are dead "
                             f"letters `implausible_timestamp`; default {events.EARLIEST_TIME}.")
    parser.add_argument("--latest_time", default=None,
                        help="Events after this time are dead letters "
                             "`implausible_timestamp`; default one day after the job starts.")


def time_window_of(args: argparse.Namespace) -> tuple[int, int]:
    """The plausible window of event times that the flags give, or a `UsageError`."""
    try:
        return events.time_window(args.earliest_time, args.latest_time)
    except ValueError as e:
        raise UsageError(f"--earliest_time/--latest_time: {e}") from None


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Adds `--verbose` to a Beam job's parser (see `set_log_level`)."""
    parser.add_argument("--verbose", action="store_true",
                        help="Log Beam's INFO messages; by default only warnings and errors.")


def set_log_level(argv) -> None:
    """Root logging at INFO with `--verbose`, else WARNING (Beam's INFO floods a terminal).

    Args:
        argv: list of str or None. The job's arguments (`sys.argv[1:]` when None); only
            `--verbose` is read, so a bad command line is still reported by the job.
    """
    quiet = argparse.ArgumentParser(add_help=False)
    add_verbose_flag(quiet)
    args, _ = quiet.parse_known_args(argv)
    logging.getLogger().setLevel(logging.INFO if args.verbose else logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (Beam pipeline options pass through)."""
    parser = argparse.ArgumentParser(
        prog="python -m beam.preprocess",
        description="Raw event tables + schema -> per-user SequenceExample TFRecords, "
                    "artifacts and dead letters. Unknown flags go to Beam.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_job_flags(parser)
    parser.add_argument("--labels", default=None, help="Label table (CSV, JSONL, Parquet).")
    parser.add_argument("--drop_duplicate_events", action="store_true",
                        help="Drop events that repeat an earlier event of the key exactly "
                             "(time and every value); they are counted either way.")
    parser.add_argument("--labels_format", default="auto",
                        choices=("auto",) + sources.FORMATS,
                        help="Format of the label files (auto: by extension).")
    parser.add_argument("--labels_delimiter", default=",",
                        help="CSV delimiter of the label files (`whitespace` for runs of "
                             "blanks); the events' is the schema's csv_delimiter.")
    parser.add_argument("--input_format", default="auto", choices=("auto",) + sources.FORMATS,
                        help="Input format; auto guesses from each file's extension.")
    parser.add_argument("--max_len", type=int, default=4096, help="Longest sequence written.")
    parser.add_argument("--window_stride", type=int, default=0,
                        help="0 keeps the most recent max_len events of each user; N > 0 cuts "
                             "long histories into max_len windows starting every N events.")
    parser.add_argument("--split", default="0.8,0.1,0.1",
                        help="Fractions of keys for train,valid,test (stable hash of the key).")
    add_verbose_flag(parser)
    runners.add_dask_workers_flag(parser)
    parser.add_argument("--max_rejected_fraction", type=float, default=0.05,
                        help="Most event rows that may be rejected (0 to 1) before the job "
                             "exits non-zero; dead letters and stats.json are written anyway.")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="TFRecord shards per split; 0 lets the runner decide.")
    parser.add_argument("--sorted_shards", action="store_true",
                        help="Write each key to the shard a stable hash of it picks, sorted "
                             "by key within the shard (needs --num_shards): the same files "
                             "on every run and runner, so a seeded training run repeats "
                             "exactly. Costs one more grouping of the written examples, and "
                             "a worker holds one shard in memory while it writes it.")
    parser.add_argument("--shuffle", default="auto", choices=("auto", "beam", "files"),
                        help="How events are grouped by key: beam (the runner's GroupByKey), "
                             "files (partitioned temporary files under the output folder: "
                             "memory bounded by one partition), auto (files on the local "
                             "in-process runner, beam on any other).")
    parser.add_argument("--as_of", default=None,
                        help="Reference time of event ages (time_features.age_buckets), in "
                             "the schema's timestamp format; default: the latest event.")
    parser.add_argument("--shuffle_partitions", type=int, default=0,
                        help="Key partitions of the files shuffle; 0 picks one per "
                             f"{file_shuffle.BYTES_PER_PARTITION // 2**20} MiB of input.")
    return parser


class WriteSortedShards(beam.PTransform):
    """Writes `((key, window_index), record)` pairs as TFRecord shards of a fixed layout.

    Each key goes to shard `events.shard_of(key, num_shards)`, and a shard's records are
    sorted by key and window: the files (`part-SSSSS-of-NNNNN.tfrecord`, all of them, empty
    or not) are the same bytes whichever runner, worker count or shuffle wrote them.

    Args:
        directory: str. The split's output folder (local or any filesystem TF can write).
        num_shards: int. Shards (positive).
    """

    def __init__(self, directory: str, num_shards: int):
        super().__init__()
        self._directory, self._num_shards = directory, num_shards

    def expand(self, pairs):
        n = self._num_shards
        every_shard = pairs.pipeline | "EveryShard" >> beam.Create([(s, None) for s in range(n)])
        return ((pairs | "ShardOf" >> beam.Map(lambda pair: (events.shard_of(pair[0][0], n),
                                                              pair)),
                 every_shard)
                | "Flatten" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.MapTuple(self._write))

    def _write(self, shard: int, pairs) -> str:
        import tensorflow as tf

        path = f"{self._directory}/part-{shard:05d}-of-{self._num_shards:05d}.tfrecord"
        tf.io.gfile.makedirs(self._directory)
        with tf.io.TFRecordWriter(path) as writer:
            for _, record in sorted(pair for pair in pairs if pair is not None):
                writer.write(record)
        return path


def build_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace, schema: Schema,
                   paths: list[str], spill: file_shuffle.Spill | None = None):
    """Adds the preprocessing steps to a pipeline.

    Args:
        pipeline: beam.Pipeline. The pipeline.
        args: Namespace. Parsed known arguments.
        schema: Schema. The validated schema.
        paths: list of str. Input files, sorted.
        spill: file_shuffle.Spill or None. Group through partitioned files instead of the
            runner's GroupByKey.

    Returns:
        PCollection holding the stats dict once the artifacts are written.
    """
    text = schema.source_text
    fractions = _parse_fractions(args.split)
    out = args.output_dir.rstrip("/")
    parsed = (
        pipeline
        | "ListFiles" >> beam.Create(list(enumerate(paths)))
        | "SpreadFiles" >> beam.Reshuffle()
        | "ParseEvents" >> beam.ParDo(ParseEventsFn(text, args.input_format, fractions,
                                                    spill=spill, window=args.window))
        .with_outputs(DEAD_LETTER, SUMMARY, COUNTS, NUMBERS, main="events"))
    grouped = {"events": parsed.events, "labels": pipeline | "NoLabels" >> beam.Create([])}
    dead_letters = [parsed[DEAD_LETTER]]
    label_summary = None
    if args.labels:
        labels = (pipeline
                  | "ListLabelFiles" >> beam.Create(match_inputs(args.labels))
                  | "ParseLabels" >> beam.ParDo(ParseLabelsFn(text, args.labels_format, spill,
                                                              args.labels_delimiter))
                  .with_outputs(DEAD_LETTER, SUMMARY, main="labels"))
        grouped["labels"] = labels.labels
        dead_letters.append(labels[DEAD_LETTER])
        label_summary = beam.pvalue.AsSingleton(
            labels[SUMMARY] | "MergeLabelSummaries" >> beam.CombineGlobally(
                analysis.MergeFileSummaries()))
    build = BuildSequencesFn(text, fractions, args.max_len, args.window_stride,
                             args.drop_duplicate_events)
    if spill is None:
        grouped_by_key = grouped | "GroupByKey" >> beam.CoGroupByKey()
        built = (grouped_by_key | "BuildSequences" >> beam.ParDo(build)
                 .with_outputs(DEAD_LETTER, SUMMARY, *analysis.SPLITS))
    else:
        # The parse summaries as side inputs: partitions are read once all files are written.
        barriers = [beam.pvalue.AsList(parsed[SUMMARY])]
        if args.labels:
            barriers.append(beam.pvalue.AsList(labels[SUMMARY]))
        built = (pipeline
                 | "Partitions" >> beam.Create(range(spill.partitions))
                 | "SpreadPartitions" >> beam.Reshuffle()
                 | "BuildSequences" >> beam.ParDo(
                     file_shuffle.GroupPartitionFn(spill, build), *barriers)
                 .with_outputs(DEAD_LETTER, SUMMARY, *analysis.SPLITS))
    dead_letters.append(built[DEAD_LETTER])
    for split in analysis.SPLITS:
        if args.sorted_shards:
            _ = built[split] | f"Write_{split}" >> WriteSortedShards(f"{out}/{split}",
                                                                     args.num_shards)
        else:
            _ = (built[split] | f"Records_{split}" >> beam.Values()
                 | f"Write_{split}" >> beam.io.WriteToTFRecord(
                     f"{out}/{split}/part", file_name_suffix=".tfrecord",
                     num_shards=args.num_shards))
    _ = (tuple(dead_letters) | "AllDeadLetters" >> beam.Flatten()
         | "WriteDeadLetters" >> beam.io.WriteToText(
             f"{out}/{DEAD_LETTER}/rejected", file_name_suffix=".jsonl",
             num_shards=max(args.num_shards, 0)))
    files = parsed[SUMMARY] | "MergeFileSummaries" >> beam.CombineGlobally(
        analysis.MergeFileSummaries())
    sequences = built[SUMMARY] | "MergeSequenceSummaries" >> beam.CombineGlobally(
        analysis.MergeSequenceSummaries())
    options = {k: getattr(args, k) for k in ("input", "labels", "max_len", "window_stride",
                                              "split", "num_shards", "sorted_shards",
                                              "window", "drop_duplicate_events")}
    if args.as_of:
        options["as_of_ms"] = events.parse_timestamp_ms(args.as_of, schema.timestamp_format)
    side = {"labels": label_summary} if label_summary is not None else {}
    top = parsed[COUNTS] | "Vocabularies" >> analysis.TopValues(max(
        [1] + [f.max_vocab for f in schema.fields if f.kind != "numeric"]))
    numbers = parsed[NUMBERS] | "Numbers" >> analysis.NumberSummaries(
        {f.name for f in schema.fields_of_kind("numeric") if f.log})
    return (pipeline
            | "ArtifactsDir" >> beam.Create([f"{out}/artifacts"])
            | "WriteArtifacts" >> beam.ParDo(
                WriteArtifactsFn(text, options), beam.pvalue.AsSingleton(files),
                beam.pvalue.AsSingleton(sequences), beam.pvalue.AsSingleton(top),
                beam.pvalue.AsSingleton(numbers), **side))


def local_runner_args(beam_args: list[str], paths: list[str]) -> list[str]:
    """Beam arguments with the local defaults added.

    The default runner is the in-process one; inputs of at least `PARALLEL_INPUT_BYTES` get
    one worker process per core (at most two per input file, at most 8).

    Args:
        beam_args: list of str. The pipeline options given on the command line.
        paths: list of str. The input files (their total size picks the worker count).

    Returns:
        The arguments, unchanged when they name a runner, a worker count or a running mode.
    """
    if any(a.startswith("--runner") for a in beam_args):
        return beam_args
    beam_args = [f"--runner={LOCAL_RUNNER}", *beam_args]
    if any(a.startswith(("--direct_num_workers", "--direct_running_mode")) for a in beam_args):
        return beam_args
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) > 1 and file_shuffle.input_bytes(paths) >= PARALLEL_INPUT_BYTES:
        beam_args += ["--direct_running_mode=multi_processing",
                      f"--direct_num_workers={min(cores, len(paths) * 2, 8)}"]
    return beam_args


def _check_args(args: argparse.Namespace) -> None:
    if args.max_len < 1:
        raise UsageError(f"--max_len must be positive, got {args.max_len}")
    if args.window_stride < 0:
        raise UsageError(f"--window_stride must be 0 or positive, got {args.window_stride}")
    if args.num_shards < 0:
        raise UsageError(f"--num_shards must be 0 or positive, got {args.num_shards}")
    if args.sorted_shards and not args.num_shards:
        raise UsageError("--sorted_shards needs --num_shards N (N > 0): the shard a key goes "
                         "to is a hash of the key modulo N")
    if args.shuffle_partitions < 0:
        raise UsageError("--shuffle_partitions must be 0 or positive, "
                         f"got {args.shuffle_partitions}")
    if not 0.0 <= args.max_rejected_fraction <= 1.0:
        raise UsageError("--max_rejected_fraction must be between 0 and 1, "
                         f"got {args.max_rejected_fraction}")
    _parse_fractions(args.split)


def run(argv=None, save_main_session=True, test_pipeline=None) -> dict:
    """Runs the preprocessing job.

    Args:
        argv: list of str or None. Command-line arguments (`sys.argv[1:]` when None).
        save_main_session: bool. Pickle the main session for remote workers.
        test_pipeline: beam.Pipeline or None. A pipeline to build into (tests).

    Returns:
        The stats written to `artifacts/stats.json`.

    Raises:
        UsageError: bad arguments or unreadable input.
        SchemaError: the schema is not valid.
    """
    args, beam_args = build_parser().parse_known_args(argv)
    _check_args(args)
    args.window = time_window_of(args)
    schema = load_schema(args.schema)
    if args.as_of:
        try:
            events.parse_timestamp_ms(args.as_of, schema.timestamp_format)
        except events.RejectedRow as e:
            raise UsageError(f"--as_of {args.as_of!r}: {e.detail}") from None
    if args.labels and not schema.labels:
        raise UsageError(f"--labels given but {args.schema} names no label columns")
    paths = match_inputs(args.input)
    check_input_columns(paths, args.input_format, schema)
    if args.labels:
        check_input_columns(match_inputs(args.labels), args.labels_format, schema,
                            labels=True, delimiter=args.labels_delimiter)
    beam_args = local_runner_args(runners.runner_args(beam_args), paths)
    output_dir = args.output_dir.rstrip("/")
    args.output_dir = claim_output(output_dir, args.overwrite)
    spill = None
    local = any(a.endswith(LOCAL_RUNNER) or a.endswith("DirectRunner") for a in beam_args)
    if args.shuffle == "files" or (args.shuffle == "auto" and local):
        spill = file_shuffle.Spill(f"{args.output_dir}/_shuffle_tmp",
                                   args.shuffle_partitions or file_shuffle.partitions_for(
                                       paths + (match_inputs(args.labels) if args.labels
                                                else [])))
    try:
        with runners.pipeline_on(beam_args, args.dask_workers, save_main_session) as built:
            pipeline = test_pipeline or built
            build_pipeline(pipeline, args, schema, paths, spill)
            pipeline.run().wait_until_finish()
    finally:
        if spill is not None:
            file_shuffle.remove(spill)
    output_folder.publish(args.output_dir, output_dir)
    return artifacts.Artifacts.load(f"{output_dir}/artifacts").stats


def first_dead_letters(output_dir: str, reasons: set[str]) -> dict[str, dict]:
    """The first event dead letter of each reason (reading stops once all are found)."""
    found: dict[str, dict] = {}
    pattern = f"{output_dir.rstrip('/')}/{DEAD_LETTER}/*.jsonl"
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            for line in f:
                record = json.loads(line)
                if record.get("source") == "events" and record["reason"] in reasons:
                    found.setdefault(record["reason"], record)
                if len(found) == len(reasons):
                    return found
    return found


def rejection_error(stats: dict, output_dir: str, max_fraction: float) -> str | None:
    """The error line when too many event rows were rejected or no user was written.

    Args:
        stats: dict. The job's `stats.json`.
        output_dir: str. The job's output folder (its dead letters are read).
        max_fraction: float. `--max_rejected_fraction`.

    Returns:
        None when the run is acceptable; otherwise one line with the count by reason and the
        first example of each reason.
    """
    rows_in, rejected = stats["rows_in"], stats["rows_rejected"]
    fraction = rejected / rows_in if rows_in else 0.0
    if fraction <= max_fraction and stats["users"] > 0:
        return None
    by_reason = stats["rejected_by_reason"]
    examples = first_dead_letters(output_dir, set(by_reason))
    reasons = "; ".join(
        f"{reason}: {count}" + (f" (first: {examples[reason]['file']} line "
                                f"{examples[reason]['line']}: {examples[reason]['detail']})"
                                if reason in examples else "")
        for reason, count in sorted(by_reason.items(), key=lambda item: -item[1]))
    where = (f"dead letters in {output_dir.rstrip('/')}/{DEAD_LETTER}/, counts in "
             f"{output_dir.rstrip('/')}/artifacts/stats.json")
    if stats["users"] == 0:
        return (f"no users written: {rejected} of {rows_in} event rows rejected"
                + (f" ({reasons})" if reasons else "") + f"; {where}")
    return (f"{rejected} of {rows_in} event rows rejected ({fraction:.1%} > "
            f"--max_rejected_fraction {max_fraction:g}): {reasons}; {where}")


def _reasons(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"


def summary_line(stats: dict) -> str:
    """The console summary of a run: rows, every kind of rejection, duplicates, users."""
    line = (f"rows in {stats['rows_in']}, used {stats['rows_used']}, truncated "
            f"{stats['rows_truncated']}, rejected {stats['rows_rejected']} "
            f"({_reasons(stats['rejected_by_reason'])}); keys stripped of blanks "
            f"{stats['keys_stripped']}; duplicate events "
            f"{stats['duplicate_events']}"
            f"{' (dropped)' if stats['options'].get('drop_duplicate_events') else ' (kept)'}; "
            f"users {stats['users']} {stats['users_by_split']}")
    if "labels" in stats:
        labels = stats["labels"]
        line += (f"; label rows in {labels['rows_in']}, used {labels['rows_used']}, rejected "
                 f"{labels['rows_rejected']} ({_reasons(labels['rejected_by_reason'])}), "
                 f"label cells rejected {labels['cells_rejected']} "
                 f"({_reasons(labels['cells_rejected_by_label'])})")
    return line


def main(argv=None) -> int:
    """Command-line entry point: runs the job and prints a summary; one line on errors.

    Exit status: 0 done; 1 the job ran but rejected more than `--max_rejected_fraction` of
    the event rows, or wrote no user; 2 a bad command line, schema or input.
    """
    set_log_level(argv)
    try:
        stats = run(argv)
    except (UsageError, SchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(stats))
    args, _ = build_parser().parse_known_args(argv)
    error = rejection_error(stats, args.output_dir, args.max_rejected_fraction)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
