"""The analysis of the training split and the run statistics, as Beam combines.

Vocabularies are counted the way Beam and tf.Transform do it, so no single accumulator holds
every distinct value: parsing emits `((table, value), count)` per chunk of rows, `TopValues`
sums them with `CombinePerKey` (one small accumulator per value) and keeps each table's most
frequent values with `Top.PerKey` (at most `n` per table). A table is `vocab/<field>` or
`tokens/<field>` (`vocab_table`, `token_table`).

Parsing also emits one `FileSummary` per input file; `MergeFileSummaries` combines them into
a bounded uniform sample of every numeric field (bottom-k by random priority, so memory does
not grow with the input) and the row counts. Building sequences emits one `SequenceSummary`
per key; `MergeSequenceSummaries` combines them into users, examples, events used and
truncated per split and the histogram of history lengths.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from autorisk_tf.data import artifacts, events
from autorisk_tf.data.schema import Schema

NUMERIC_SAMPLE_SIZE = 100_000
CATEGORY_SAMPLE_SIZE = 10_000  # per category of a `bucket_by` field
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class FileSummary:
    """Counts of one input file (or of many, once merged)."""

    rows_in: int = 0
    blank_lines: int = 0
    last_timestamp_ms: int | None = None  # of the accepted events
    rejected: Counter = dataclasses.field(default_factory=Counter)
    numeric: dict = dataclasses.field(default_factory=dict)  # field -> (priorities, values)
    # `bucket_by` fields: field -> {category: (priorities, values)} and {category: count}.
    numeric_by: dict = dataclasses.field(default_factory=dict)
    numeric_by_count: dict = dataclasses.field(default_factory=dict)

    def add_numeric_sample(self, field: str, values: np.ndarray, rng: np.random.Generator):
        """Adds values to the bounded sample of a numeric field."""
        values = values[np.isfinite(values)]
        priorities = rng.random(values.size)
        _add_sample(self.numeric, field, priorities, values, NUMERIC_SAMPLE_SIZE)

    def add_category_samples(self, field: str, categories: list, values: np.ndarray,
                             rng: np.random.Generator):
        """Adds values to the bounded per-category samples of a `bucket_by` field.

        Args:
            field: str. The numeric field.
            categories: list of str. The `bucket_by` field's value of each event ("" is
                missing: such values count for the global boundaries only).
            values: array of float. The numeric values, NaN for missing.
            rng: np.random.Generator. Draws the sampling priorities.
        """
        finite = np.isfinite(values)
        names, index = np.unique(np.asarray(categories, dtype=object)[finite],
                                 return_inverse=True)
        values = values[finite]
        samples = self.numeric_by.setdefault(field, {})
        counts = self.numeric_by_count.setdefault(field, Counter())
        for i, name in enumerate(names):
            if name == "":
                continue
            mine = values[index == i]
            counts[name] += mine.size
            _add_sample(samples, name, rng.random(mine.size), mine, CATEGORY_SAMPLE_SIZE)

    def merge(self, other: FileSummary) -> FileSummary:
        """Adds another summary into this one and returns self."""
        self.rows_in += other.rows_in
        self.blank_lines += other.blank_lines
        self.last_timestamp_ms = max(
            (t for t in (self.last_timestamp_ms, other.last_timestamp_ms) if t is not None),
            default=None)
        self.rejected.update(other.rejected)
        for field, (p, v) in other.numeric.items():
            _add_sample(self.numeric, field, p, v, NUMERIC_SAMPLE_SIZE)
        for field, samples in other.numeric_by.items():
            mine = self.numeric_by.setdefault(field, {})
            for name, (p, v) in samples.items():
                _add_sample(mine, name, p, v, CATEGORY_SAMPLE_SIZE)
            self.numeric_by_count.setdefault(field, Counter()).update(
                other.numeric_by_count[field])
        return self


def _add_sample(samples: dict, key, priorities: np.ndarray, values: np.ndarray, size: int):
    """Merges values into `samples[key]`, a bottom-`size` sample by random priority."""
    old_p, old_v = samples.get(key, (np.empty(0), np.empty(0)))
    priorities = np.concatenate([old_p, priorities])
    values = np.concatenate([old_v, values])
    if priorities.size > size:
        keep = np.argpartition(priorities, size)[:size]
        priorities, values = priorities[keep], values[keep]
    samples[key] = (priorities, values)


def vocab_table(field: str) -> str:
    """The `TopValues` table of a categorical field's values."""
    return f"vocab/{field}"


def token_table(field: str) -> str:
    """The `TopValues` table of a text field's tokens."""
    return f"tokens/{field}"


def _most_frequent_first(item: tuple[int, str]) -> tuple:
    """Orders `(count, value)` so that `Top` keeps higher counts, then smaller values.

    Negated code points reverse the string order; the trailing 1 (above every negated code
    point) makes a value rank before the longer values it is a prefix of.
    """
    count, value = item
    return count, tuple(-ord(c) for c in value) + (1,)


class TopValues(beam.PTransform):
    """`((table, value), count)` elements to `{table: [(value, count), ...]}`, one dict.

    Counts are summed per value (`CombinePerKey`), the empty value (missing) is dropped and
    each table keeps its `n` most frequent values (`Top.PerKey`), count descending then value
    ascending: the order and ties of `artifacts.build_vocabulary`.

    Args:
        n: int. Values kept per table (the largest `max_vocab` of the tables).
    """

    def __init__(self, n: int):
        super().__init__()
        self._n = n

    def expand(self, counts):
        sizes = Metrics.distribution("analysis", "values_per_table_after_top")
        per_value = Metrics.counter("analysis", "value_accumulators")

        def by_table(item):
            (table, value), count = item
            per_value.inc()
            return table, (count, value)

        def as_list(item):
            table, top = item
            sizes.update(len(top))
            return table, [(value, count) for count, value in top]

        return (counts
                | "SumPerValue" >> beam.CombinePerKey(sum)
                | "DropMissing" >> beam.Filter(lambda item: item[0][1] != "")
                | "ByTable" >> beam.Map(by_table)
                | "TopPerTable" >> beam.combiners.Top.PerKey(max(self._n, 1),
                                                               key=_most_frequent_first)
                | "AsList" >> beam.Map(as_list)
                | "AsDict" >> beam.combiners.ToDict())


class MergeFileSummaries(beam.CombineFn):
    """Combines `FileSummary`s into one."""

    def create_accumulator(self):
        return FileSummary()

    def add_input(self, accumulator, summary):
        return accumulator.merge(summary)

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        result = next(accumulators)
        for accumulator in accumulators:
            result.merge(accumulator)
        return result

    def extract_output(self, accumulator):
        return accumulator


@dataclasses.dataclass
class SequenceSummary:
    """Counts of the built sequences (one key, or many once merged)."""

    users: Counter = dataclasses.field(default_factory=Counter)  # split -> users
    examples: Counter = dataclasses.field(default_factory=Counter)  # split -> examples
    events_used: int = 0
    events_truncated: int = 0
    users_with_labels: int = 0
    label_keys_without_events: int = 0
    label_duplicates: int = 0
    lengths: Counter = dataclasses.field(default_factory=Counter)  # history length -> users

    def merge(self, other: SequenceSummary) -> SequenceSummary:
        """Adds another summary into this one and returns self."""
        self.users.update(other.users)
        self.examples.update(other.examples)
        self.events_used += other.events_used
        self.events_truncated += other.events_truncated
        self.users_with_labels += other.users_with_labels
        self.label_keys_without_events += other.label_keys_without_events
        self.label_duplicates += other.label_duplicates
        self.lengths.update(other.lengths)
        return self


class MergeSequenceSummaries(MergeFileSummaries):
    """Combines `SequenceSummary`s into one."""

    def create_accumulator(self):
        return SequenceSummary()


def length_percentiles(lengths: Counter) -> dict:
    """Percentiles of the history lengths from their histogram.

    Args:
        lengths: Counter. Length to number of users.

    Returns:
        `{"min", "p50", "p90", "p99", "max", "mean"}`; empty when there are no users.
    """
    if not lengths:
        return {}
    values = np.array(sorted(lengths), dtype=np.float64)
    weights = np.array([lengths[v] for v in sorted(lengths)], dtype=np.float64)
    cumulative = np.cumsum(weights) / weights.sum()
    result = {"min": int(values[0]), "max": int(values[-1]),
              "mean": round(float(np.average(values, weights=weights)), 2)}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        result[name] = int(values[np.searchsorted(cumulative, q)])
    return result


def build_artifacts(schema: Schema, files: FileSummary, sequences: SequenceSummary,
                    labels: FileSummary | None, options: dict,
                    top: dict) -> artifacts.Artifacts:
    """Turns the merged summaries into artifacts, and checks that every row is accounted for.

    Args:
        schema: Schema. The event schema.
        files: FileSummary. Merged summary of the event files (numeric samples).
        sequences: SequenceSummary. Merged summary of the built sequences.
        labels: FileSummary or None. Merged summary of the label table.
        options: dict. The run's options, recorded in the stats.
        top: dict. `TopValues` of the training split's values and tokens.

    Returns:
        The artifacts.

    Raises:
        RuntimeError: rows in != rows used + truncated + rejected (a bug, never bad input).
    """
    vocabularies = {
        f.name: artifacts.build_vocabulary(dict(top.get(vocab_table(f.name), [])),
                                           f.max_vocab, f.min_count)
        for f in schema.fields_of_kind("categorical")}
    text_vocabularies = {
        f.name: artifacts.build_vocabulary(dict(top.get(token_table(f.name), [])),
                                           f.max_vocab, f.min_count)
        for f in schema.fields_of_kind("text")}
    boundaries = {
        f.name: artifacts.quantile_boundaries(
            np.sort(files.numeric.get(f.name, (None, np.empty(0)))[1]), f.num_buckets, f.log)
        for f in schema.fields_of_kind("numeric")}
    category_boundaries = {
        f.name: {name: artifacts.quantile_boundaries(np.sort(values), f.num_buckets, f.log)
                 for name, (_, values) in sorted(files.numeric_by.get(f.name, {}).items())
                 if files.numeric_by_count[f.name][name] >= f.min_count}
        for f in schema.fields_of_kind("numeric") if f.bucket_by}
    numeric_scales = {}
    for f in schema.fields_of_kind("numeric"):
        if f.continuous:
            mean, std = artifacts.mean_and_std(files.numeric.get(f.name, (None, []))[1], f.log)
            own = files.numeric_by.get(f.name, {})
            numeric_scales[f.name] = {"mean": mean, "std": std, "categories": {
                name: artifacts.mean_and_std(own[name][1], f.log)
                for name in category_boundaries.get(f.name, {})}}
    rejected = sum(files.rejected.values())
    stats = {
        "rows_in": files.rows_in,
        "rows_used": sequences.events_used,
        "rows_truncated": sequences.events_truncated,
        "rows_rejected": rejected,
        "rejected_by_reason": dict(sorted(files.rejected.items())),
        "blank_lines_skipped": files.blank_lines,
        "reconciled": files.rows_in == sequences.events_used + sequences.events_truncated
        + rejected,
        "users": sum(sequences.users.values()),
        "users_by_split": {s: sequences.users.get(s, 0) for s in SPLITS},
        "examples_by_split": {s: sequences.examples.get(s, 0) for s in SPLITS},
        "history_length": length_percentiles(sequences.lengths),
        "numeric_sample_size": {f: int(v[1].size) for f, v in files.numeric.items()},
        "options": options,
        # Ages of events (time_features.age_buckets) are measured to this time.
        "reference_time_ms": options.get("as_of_ms") or files.last_timestamp_ms,
    }
    if labels is not None:
        label_rejected = sum(labels.rejected.values()) + sequences.label_duplicates
        used = sequences.users_with_labels
        stats["labels"] = {
            "rows_in": labels.rows_in,
            "rows_used": used,
            "rows_without_events": sequences.label_keys_without_events,
            "rows_rejected": label_rejected,
            "rejected_by_reason": dict(sorted((labels.rejected + Counter(
                {events.DUPLICATE_LABEL_KEY: sequences.label_duplicates})).items())),
            "reconciled": labels.rows_in == used + sequences.label_keys_without_events
            + label_rejected,
            "users_without_labels": stats["users"] - used,
        }
    if not stats["reconciled"] or not stats.get("labels", {"reconciled": True})["reconciled"]:
        raise RuntimeError(f"row counts do not reconcile: {stats}")
    return artifacts.Artifacts(schema, vocabularies, text_vocabularies, boundaries, stats,
                               category_boundaries, numeric_scales)
