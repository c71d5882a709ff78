"""The analysis of the training split and the run statistics, as Beam combines.

Vocabularies are counted the way Beam and tf.Transform do it, so no single accumulator holds
every distinct value: parsing emits `((table, value), count)` per chunk of rows, `TopValues`
sums them with `CombinePerKey` (one small accumulator per value) and keeps each table's most
frequent values with `Top.PerKey` (at most `n` per table). A table is `vocab/<field>` or
`tokens/<field>` (`vocab_table`, `token_table`).

Numbers are summarised per key too: parsing emits `((field, category), values)` per chunk of
rows (category "" for the whole field, and one per category of a `bucket_by` field), and
`NumberSummaries` combines them per key (`CombinePerKey`, so no accumulator holds two keys):
every value up to `EXACT_VALUES` values, beyond that Beam's `ApproximateQuantiles` sketch of
`SKETCH_POINTS` evenly spaced quantiles (rank error at most `QUANTILE_EPSILON` times the
count); and the count, mean and variance, merged exactly. Bucket boundaries are the
quantiles of those values (`artifacts.quantile_boundaries`).

Parsing also emits one `FileSummary` per input file (row counts, rejections, the latest
timestamp); `MergeFileSummaries` adds them up. Building sequences emits one `SequenceSummary`
per key; `MergeSequenceSummaries` combines them into users, examples, events used and
truncated per split and the histogram of history lengths.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from autorisk_tf.contract import SPLITS
from autorisk_tf.data import artifacts, events
from autorisk_tf.data.schema import Schema

EXACT_VALUES = 10_000  # a key's values are kept exactly up to this many
SKETCH_POINTS = 1001  # then quantiles of Beam's sketch: min, 999 inner, max
QUANTILE_EPSILON = 5e-3  # worst case; holds at most about 40k values per key


@dataclasses.dataclass
class FileSummary:
    """Counts of one input file (or of many, once merged)."""

    rows_in: int = 0
    blank_lines: int = 0
    last_timestamp_ms: int | None = None  # of the accepted events
    rejected: Counter = dataclasses.field(default_factory=Counter)
    cells_rejected: Counter = dataclasses.field(default_factory=Counter)  # label -> cells
    keys_stripped: int = 0  # rows whose key had leading or trailing blanks (removed)

    def merge(self, other: FileSummary) -> FileSummary:
        """Adds another summary into this one and returns self."""
        self.rows_in += other.rows_in
        self.blank_lines += other.blank_lines
        self.last_timestamp_ms = max(
            (t for t in (self.last_timestamp_ms, other.last_timestamp_ms) if t is not None),
            default=None)
        self.rejected.update(other.rejected)
        self.cells_rejected.update(other.cells_rejected)
        self.keys_stripped += other.keys_stripped
        return self


def number_batches(field: str, values: np.ndarray,
                   categories: list[str] | None = None) -> Iterator[tuple[tuple, list]]:
    """The `NumberSummaries` inputs of one chunk of a numeric field.

    Args:
        field: str. The numeric field's name.
        values: float array. The chunk's values, NaN where missing (skipped).
        categories: list of str or None. The `bucket_by` field's value of each event ("" is
            missing: such values count for the whole field only).

    Yields:
        `((field, ""), values)` for the whole field, then `((field, category), values)` per
        category present; values as lists of float.
    """
    finite = np.isfinite(values)
    if not finite.any():
        return
    yield (field, ""), values[finite].tolist()
    if categories is None:
        return
    names, index = np.unique(np.asarray(categories, dtype=object)[finite],
                             return_inverse=True)
    values = values[finite]
    for i, name in enumerate(names):
        if name != "":
            yield (field, name), values[index == i].tolist()


class MergeMoments(beam.CombineFn):
    """`[values]` batches to `(count, mean, m2)` (sum of squared deviations), merged exactly.

    Args:
        log: bool. Measure `sign(x) * log1p(|x|)` instead of x.
    """

    def __init__(self, log: bool):
        self._log = log

    def create_accumulator(self):
        return 0, 0.0, 0.0

    def add_input(self, accumulator, values):
        array = np.asarray(values, dtype=np.float64)
        if self._log:
            array = artifacts.log_transform(array)
        if not array.size:
            return accumulator
        mean = float(array.mean())
        return self.merge_accumulators(
            [accumulator, (array.size, mean, float(((array - mean) ** 2).sum()))])

    def merge_accumulators(self, accumulators):
        n, mean, m2 = 0, 0.0, 0.0
        for other_n, other_mean, other_m2 in accumulators:
            if not other_n:
                continue
            total = n + other_n
            delta = other_mean - mean
            mean += delta * other_n / total
            m2 += other_m2 + delta * delta * n * other_n / total
            n = total
        return n, mean, m2

    def extract_output(self, accumulator):
        return accumulator


class QuantileSketch(beam.CombineFn):
    """`[values]` batches to their sorted values, or to approximate quantiles.

    Beyond `EXACT_VALUES` values the accumulator is Beam's `ApproximateQuantiles` state, and
    the output its `SKETCH_POINTS` points (rank error at most `QUANTILE_EPSILON` times the
    count).
    """

    def __init__(self):
        self._sketch = beam.transforms.stats.ApproximateQuantilesCombineFn.create(
            SKETCH_POINTS, epsilon=QUANTILE_EPSILON, input_batched=True)

    def create_accumulator(self):
        return [], None  # every value so far, or the sketch's state once there are too many

    def add_input(self, accumulator, values):
        exact, state = accumulator
        if state is not None:
            return exact, self._sketch.add_input(state, values)
        exact.extend(values)
        if len(exact) <= EXACT_VALUES:
            return exact, None
        return [], self._sketch.add_input(self._sketch.create_accumulator(), exact)

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        exact = [v for values, _ in accumulators for v in values]
        states = [state for _, state in accumulators if state is not None]
        if not states:
            return self.add_input(self.create_accumulator(), exact)
        state = self._sketch.merge_accumulators(states)
        return [], self._sketch.add_input(state, exact) if exact else state

    def extract_output(self, accumulator):
        exact, state = accumulator
        return sorted(exact) if state is None else self._sketch.extract_output(state)


class NumberSummaries(beam.PTransform):
    """`((field, category), values)` batches to `{(field, category): NumberSummary}`.

    Args:
        log_fields: set of str. Fields whose moments are measured after the log transform.
    """

    def __init__(self, log_fields: set[str]):
        super().__init__()
        self._log_fields = set(log_fields)

    def expand(self, batches):
        log_fields = self._log_fields
        by_log = batches | "ByLog" >> beam.Partition(
            lambda item, _: int(item[0][0] in log_fields), 2)
        moments = [part | f"Moments{i}" >> beam.CombinePerKey(MergeMoments(log=bool(i)))
                   for i, part in enumerate(by_log)]

        def summary(item):
            key, grouped = item
            (count, mean, m2), = grouped["moments"]
            (quantiles,) = grouped["quantiles"]
            return key, NumberSummary(count, mean, math.sqrt(m2 / count), list(quantiles))

        return ({"quantiles": batches | "Quantiles" >> beam.CombinePerKey(QuantileSketch()),
                 "moments": moments | "AllMoments" >> beam.Flatten()}
                | "Join" >> beam.CoGroupByKey()
                | "Summary" >> beam.Map(summary)
                | "AsDict" >> beam.combiners.ToDict())


@dataclasses.dataclass
class NumberSummary:
    """The values of one numeric field (or of one category of its `bucket_by` field).

    Args:
        count: int. Finite values in the training split.
        mean: float. Their mean (after the log transform for `log` fields).
        std: float. Their standard deviation (likewise).
        quantiles: list of float. Every value, sorted, up to `EXACT_VALUES` values; beyond
            that `SKETCH_POINTS` evenly spaced quantiles, min and max included.
    """

    count: int
    mean: float
    std: float
    quantiles: list


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
    duplicate_events: int = 0  # exact repeats of an earlier event of the key
    duplicates_dropped: int = 0  # of those, dropped (--drop_duplicate_events)
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
        self.duplicate_events += other.duplicate_events
        self.duplicates_dropped += other.duplicates_dropped
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
                    labels: FileSummary | None, options: dict, top: dict,
                    numbers: dict) -> artifacts.Artifacts:
    """Turns the merged summaries into artifacts, and checks that every row is accounted for.

    Args:
        schema: Schema. The event schema.
        files: FileSummary. Merged summary of the event files.
        sequences: SequenceSummary. Merged summary of the built sequences.
        labels: FileSummary or None. Merged summary of the label table.
        options: dict. The run's options, recorded in the stats.
        top: dict. `TopValues` of the training split's values and tokens.
        numbers: dict. `NumberSummaries` of the training split's numbers.

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
    none = NumberSummary(0, 0.0, 0.0, [])
    numeric = schema.fields_of_kind("numeric")
    boundaries = {f.name: artifacts.quantile_boundaries(
        numbers.get((f.name, ""), none).quantiles, f.num_buckets, f.log) for f in numeric}
    own = {f.name: {name: summary for (field, name), summary in sorted(numbers.items())
                    if field == f.name and name and summary.count >= f.min_count}
           for f in numeric if f.bucket_by}
    category_boundaries = {
        field: {name: artifacts.quantile_boundaries(summary.quantiles, f.num_buckets, f.log)
                for name, summary in own[field].items()}
        for field, f in ((f.name, f) for f in numeric if f.bucket_by)}
    numeric_scales = {}
    for f in numeric:
        if f.continuous:
            whole = numbers.get((f.name, ""), none)
            mean, std = artifacts.standardisation(whole.count, whole.mean, whole.std)
            numeric_scales[f.name] = {"mean": mean, "std": std, "categories": {
                name: artifacts.standardisation(s.count, s.mean, s.std)
                for name, s in own.get(f.name, {}).items()}}
    by_reason = files.rejected + Counter({events.DUPLICATE_EVENT: sequences.duplicates_dropped})
    rejected = sum(by_reason.values())
    stats = {
        "rows_in": files.rows_in,
        "rows_used": sequences.events_used,
        "rows_truncated": sequences.events_truncated,
        "rows_rejected": rejected,
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "duplicate_events": sequences.duplicate_events,
        # keys are stripped of leading and trailing blanks; rows whose key changed:
        "keys_stripped": files.keys_stripped,
        "blank_lines_skipped": files.blank_lines,
        "reconciled": files.rows_in == sequences.events_used + sequences.events_truncated
        + rejected,
        "users": sum(sequences.users.values()),
        "users_by_split": {s: sequences.users.get(s, 0) for s in SPLITS},
        "examples_by_split": {s: sequences.examples.get(s, 0) for s in SPLITS},
        "history_length": length_percentiles(sequences.lengths),
        "numeric_values": {f.name: numbers.get((f.name, ""), none).count for f in numeric},
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
            # bad cells of rows that were used: that label is missing, the others are kept
            "cells_rejected": sum(labels.cells_rejected.values()),
            "cells_rejected_by_label": dict(sorted(labels.cells_rejected.items())),
            "keys_stripped": labels.keys_stripped,
        }
    if not stats["reconciled"] or not stats.get("labels", {"reconciled": True})["reconciled"]:
        raise RuntimeError(f"row counts do not reconcile: {stats}")
    return artifacts.Artifacts(schema, vocabularies, text_vocabularies, boundaries, stats,
                               category_boundaries, numeric_scales)
