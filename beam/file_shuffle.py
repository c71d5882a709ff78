"""A group-by-key through partitioned temporary files: bounded memory on local runners.

Beam's in-process runner keeps a whole GroupByKey in memory, so local memory would grow with
the input. In `--shuffle files` mode the parse step appends its rows to one of P files chosen
by a stable hash of the key, and a second step groups one partition at a time, so memory
stays near one partition (the input size / P) plus the longest history. Works on any
filesystem Beam knows; Dataflow keeps Beam's own shuffle (`--shuffle beam`).

The files are Arrow IPC streams, one column per value (strings or float64, NaN kept): a data
format, so reading a spill file left in a shared bucket can never run code, as unpickling
could. Grouping sorts a partition by key, timestamp and input order in Arrow (C++), so each
key's events come out in time order as one columnar batch.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

EVENTS = "events"
LABELS = "labels"
KEY = "key"
# Input bytes per partition: about 0.5 GB of Python objects for CSV input.
BYTES_PER_PARTITION = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class Spill:
    """Where and how finely the file shuffle partitions keys.

    Args:
        directory: str. Temporary folder (local or gs://), removed after the run.
        partitions: int. Number of key partitions P.
    """

    directory: str
    partitions: int

    def partition(self, key: str) -> int:
        """The partition of a key (a stable hash, the same on every worker)."""
        return zlib.crc32(key.encode("utf-8")) % self.partitions

    def pattern(self, kind: str, partition: int) -> str:
        """Glob of a partition's files of one kind."""
        return f"{self.directory}/{kind}-p{partition:05d}-*.arrows"


def input_bytes(paths: list[str]) -> int:
    """The total size of some files (local or any filesystem Beam knows)."""
    return sum(m.size_in_bytes for m in FileSystems.match(paths)
               for m in m.metadata_list) if paths else 0


def partitions_for(paths: list[str]) -> int:
    """Partitions for some input files: one per BYTES_PER_PARTITION of input, at least 1."""
    return max(1, math.ceil(input_bytes(paths) / BYTES_PER_PARTITION))


def arrow_schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    """The spill schema: the key, then named columns of kind `str`, `float` or `int`.

    Args:
        columns: sequence of `(name, kind)`.

    Returns:
        A `pyarrow.Schema` with a string `key` column first.
    """
    types = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}
    return pa.schema([(KEY, pa.string())] + [(name, types[kind]) for name, kind in columns])


class SpillWriter:
    """Appends rows to the partition files of one producer.

    File names depend only on the producer's tag, so a retried bundle overwrites its own
    files instead of adding duplicates.

    Args:
        spill: Spill. The shuffle's folder and partition count.
        kind: str. `events` or `labels`.
        tag: str. Names the producer (such as the input file index).
        schema: pyarrow.Schema. The rows' columns (`arrow_schema`).
    """

    def __init__(self, spill: Spill, kind: str, tag: str, schema: pa.Schema):
        self._spill, self._kind, self._tag, self._schema = spill, kind, tag, schema
        self._partitions: dict[str, int] = {}
        self._files = {}

    def write(self, keys: list[str], columns: Sequence[Sequence]) -> None:
        """Appends rows to their keys' partition files.

        Args:
            keys: list of str. Each row's key.
            columns: one sequence per non-key column of the schema, each as long as `keys`.
        """
        if not keys:
            return
        partition_of = self._partitions
        for key in set(keys).difference(partition_of):
            partition_of[key] = self._spill.partition(key)
        parts = np.fromiter((partition_of[k] for k in keys), dtype=np.int64, count=len(keys))
        batch = pa.RecordBatch.from_arrays(
            [pa.array(column, type=field.type) for column, field in
             zip([keys, *columns], self._schema, strict=True)], schema=self._schema)
        order = np.argsort(parts, kind="stable")
        bounds = np.searchsorted(parts[order], np.arange(self._spill.partitions + 1))
        for partition in range(self._spill.partitions):
            start, end = bounds[partition], bounds[partition + 1]
            if start < end:
                self._stream(partition).write_batch(batch.take(pa.array(order[start:end])))

    def _stream(self, partition: int):
        stream = self._files.get(partition)
        if stream is None:
            path = f"{self._spill.directory}/{self._kind}-p{partition:05d}-{self._tag}.arrows"
            handle = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
            stream = self._files[partition] = (pa.ipc.new_stream(handle, self._schema), handle)
        return stream[0]

    def close(self) -> None:
        """Closes every file written."""
        for stream, handle in self._files.values():
            stream.close()
            handle.close()
        self._files = {}


def read_table(spill: Spill, kind: str, partition: int) -> pa.Table | None:
    """Every row of one kind in one partition, or None when no producer wrote any.

    Raises:
        pyarrow.ArrowInvalid: a file in the folder is not an Arrow stream.
    """
    tables = []
    for metadata in FileSystems.match([spill.pattern(kind, partition)])[0].metadata_list:
        with FileSystems.open(metadata.path,
                              compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            tables.append(pa.ipc.open_stream(handle).read_all())
    return pa.concat_tables(tables) if tables else None


def _column(table: pa.Table, name: str):
    """A column as numpy (numbers) or a list of str (strings)."""
    column = table.column(name)
    if pa.types.is_string(column.type):
        return column.to_pylist()
    return column.to_numpy()


def read_partition(spill: Spill, partition: int) -> Iterator[tuple[str, dict]]:
    """Groups one partition: `(key, {"events": [batch], "labels": [(file, line, labels)]})`.

    Keys come in order. A key's events are one batch `(timestamps, orders, columns)`, sorted
    by timestamp then input order (columns in the events schema's order, after `timestamp`
    and `order`); a key with labels and no events has an empty list. The shape `CoGroupByKey`
    gives with batches, so the per-key DoFns serve both shuffles.
    """
    labels = defaultdict(list)
    table = read_table(spill, LABELS, partition)
    if table is not None:
        names = table.column_names[3:]
        for row in zip(*(table.column(n).to_pylist() for n in table.column_names),
                       strict=True):
            labels[row[0]].append((row[1], row[2], dict(zip(names, row[3:], strict=True))))
    spans, columns = {}, []
    table = read_table(spill, EVENTS, partition)
    if table is not None and table.num_rows:
        table = table.sort_by([(KEY, "ascending"), (table.column_names[1], "ascending"),
                               (table.column_names[2], "ascending")])
        keys = table.column(KEY).combine_chunks().dictionary_encode()
        codes = keys.indices.to_numpy()
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(codes)]
        names = keys.dictionary.to_pylist()
        spans = {names[codes[s]]: (s, e) for s, e in zip(starts, ends, strict=True)}
        columns = [_column(table, name) for name in table.column_names[1:]]
    for key in sorted(spans.keys() | labels.keys()):
        span = spans.get(key)
        batches = []
        if span is not None:
            start, end = span
            timestamps, orders, *values = (c[start:end] for c in columns)
            batches.append((timestamps, orders, values))
        yield key, {EVENTS: batches, LABELS: labels.get(key, [])}


class GroupPartitionFn(beam.DoFn):
    """Reads one partition and hands each key's group to a per-key DoFn.

    Args:
        spill: Spill. The shuffle's folder and partition count.
        build: beam.DoFn. Called as `build.process((key, group), *side)` for every key, in
            key order, where `side` are the first `side_inputs` extra arguments.
        side_inputs: int. Extra arguments forwarded to `build`; the ones after them are
            barriers (side inputs that only order the steps). Defaults to 0.
    """

    def __init__(self, spill: Spill, build: beam.DoFn, side_inputs: int = 0):
        self._spill = spill
        self._build = build
        self._side_inputs = side_inputs

    def setup(self):
        self._build.setup()

    def process(self, partition, *extra):
        side = extra[:self._side_inputs]
        for key, group in read_partition(self._spill, partition):
            yield from self._build.process((key, group), *side)


def remove(spill: Spill) -> None:
    """Deletes the shuffle's temporary folder, if it exists."""
    if FileSystems.exists(spill.directory):
        FileSystems.delete([spill.directory])
