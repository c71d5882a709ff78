"""A group-by-key through partitioned temporary files: bounded memory on local runners.

Beam's in-process runner keeps a whole GroupByKey in memory, so local memory would grow with
the input. In `--shuffle files` mode the parse step appends each `(key, value)` to one of P
files chosen by a stable hash of the key, and a second step groups one partition at a time,
so memory stays near one partition (the input size / P) plus the longest history. Works on
any filesystem Beam knows; Dataflow keeps Beam's own shuffle (`--shuffle beam`).

The files are JSON Lines (`[key, value]` per line, ASCII-escaped, NaN kept), a data format:
reading a spill file left in a shared bucket can never run code, as unpickling could.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections import defaultdict
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

EVENTS = "events"
LABELS = "labels"
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
        return f"{self.directory}/{kind}-p{partition:05d}-*.jsonl"


def partitions_for(paths: list[str]) -> int:
    """Partitions for some input files: one per BYTES_PER_PARTITION of input, at least 1."""
    total = sum(m.size_in_bytes for m in FileSystems.match(paths)
                for m in m.metadata_list) if paths else 0
    return max(1, math.ceil(total / BYTES_PER_PARTITION))


class SpillWriter:
    """Appends `(key, value)` records to the partition files of one producer.

    File names depend only on the producer's tag, so a retried bundle overwrites its own
    files instead of adding duplicates.

    Args:
        spill: Spill. The shuffle's folder and partition count.
        kind: str. `events` or `labels`.
        tag: str. Names the producer (such as the input file index).
    """

    def __init__(self, spill: Spill, kind: str, tag: str):
        self._spill, self._kind, self._tag = spill, kind, tag
        self._files = {}

    def add(self, key: str, value) -> None:
        """Appends one record to its key's partition file."""
        partition = self._spill.partition(key)
        handle = self._files.get(partition)
        if handle is None:
            path = f"{self._spill.directory}/{self._kind}-p{partition:05d}-{self._tag}.jsonl"
            handle = self._files[partition] = FileSystems.create(path)
        handle.write(json.dumps([key, value]).encode("ascii") + b"\n")

    def close(self) -> None:
        """Closes every file written."""
        for handle in self._files.values():
            handle.close()
        self._files = {}


def _records(pattern: str) -> Iterator[list]:
    """The `[key, value]` records of every file of a partition (tuples come back as lists)."""
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path) as handle:
            for line in handle:
                yield json.loads(line)


def read_partition(spill: Spill, partition: int) -> dict[str, dict[str, list]]:
    """Groups one partition: `{key: {"events": [batches], "labels": [values]}}`.

    The same shape as `CoGroupByKey` gives, so the sequence builder serves both shuffles.
    """
    grouped = defaultdict(lambda: {EVENTS: [], LABELS: []})
    for kind in (EVENTS, LABELS):
        for key, value in _records(spill.pattern(kind, partition)):
            grouped[key][kind].append(value)
    return grouped


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
        grouped = read_partition(self._spill, partition)
        for key in sorted(grouped):
            yield from self._build.process((key, grouped[key]), *side)


def remove(spill: Spill) -> None:
    """Deletes the shuffle's temporary folder, if it exists."""
    if FileSystems.exists(spill.directory):
        FileSystems.delete([spill.directory])
