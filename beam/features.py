r"""Hand-made per-key features from raw event tables: `python -m beam.features`.

  python -m beam.features --input 'events/*.csv' --schema schema.yaml --output_dir feats/ \
      [--top_values 10] [--as_of 2011-09-09T00:00:00] [Beam pipeline options]

The "mature manual feature pool" a risk team already has, from the same schema, inputs and
runners as `beam.preprocess`: the rows are parsed by the same step (bad rows go to
`dead_letter/` with a reason), grouped by key through the same shuffle, and turned into one
row of numbers per key:

- activity: `n_events`, `n_active_days`, `recency_days` (from the last event to `--as_of`,
  by default the latest event of the input), `tenure_days` (first to last event),
  `days_since_first`, `events_per_active_day`, `mean_gap_days`;
- every categorical field: `<f>_distinct`, `<f>_missing_share`, the count and share of each
  of its `--top_values` most frequent values over the whole input (`<f>_top<i>_count`,
  `<f>_top<i>_share`, in the order of `feature_info.json`) and `<f>_other_share` (for a
  multi-valued field every value of a cell counts, so shares are per event and may sum
  over 1);
- every numeric field: `<f>_mean`, `_sum`, `_min`, `_max`, `_std`, `_last` (NaN when the key
  has no value) and `_missing_share`; a field with `bucket_by` also gets, for each of the
  `--top_values` most frequent values of that field, the `first`, `last`, `min`, `max`,
  `mean` and `count` of its numbers at the events of that value
  (`<f>_by<i>_first` ... for the i-th value: a lab value per test, an amount per event
  type);
- every text field: `<f>_distinct` and `<f>_missing_share`;
- the schema's time features: `hour_<h>_share` and `dow_<d>_share` profiles.

Writes `features-*.parquet` (column `key` then the features, in `feature_info.json`'s
order), `feature_info.json` (columns, top values, reference time), `stats.json` (rows in =
used + rejected, by reason; keys) and `dead_letter/*.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from autorisk_tf.data import artifacts, events, output_folder
from autorisk_tf.data.schema import Schema, SchemaError, load_schema, parse_schema
from beam import analysis, file_shuffle, runners
from beam.preprocess import (
    COUNTS,
    DEAD_LETTER,
    LOCAL_RUNNER,
    NUMBERS,
    SUMMARY,
    ParseEventsFn,
    UsageError,
    add_job_flags,
    add_verbose_flag,
    check_input_columns,
    claim_output,
    local_runner_args,
    match_inputs,
    set_log_level,
    sorted_history,
    time_window_of,
)

DAY_MS = 86_400_000
CATEGORY_STATS = ("first", "last", "min", "max", "mean", "count")
# Every key counts as "training" for the top values: features are not a train/test split.
_ALL_KEYS = (1.0, 0.0, 0.0)


def feature_columns(schema: Schema, top_values: int) -> list[str]:
    """The feature column names, in output order (the same for every input).

    Args:
        schema: Schema. The event schema.
        top_values: int. Top values counted per categorical field.

    Returns:
        The names, without the `key` column.
    """
    names = ["n_events", "n_active_days", "recency_days", "tenure_days", "days_since_first",
             "events_per_active_day", "mean_gap_days"]
    for field in schema.fields:
        f = field.name
        if field.kind == "categorical":
            names += [f"{f}_distinct", f"{f}_missing_share"]
            for i in range(top_values):
                names += [f"{f}_top{i}_count", f"{f}_top{i}_share"]
            names.append(f"{f}_other_share")
        elif field.kind == "numeric":
            names += [f"{f}_{stat}" for stat in ("mean", "sum", "min", "max", "std", "last",
                                                  "missing_share")]
            if field.bucket_by:
                names += [f"{f}_by{i}_{stat}" for i in range(top_values)
                          for stat in CATEGORY_STATS]
        else:
            names += [f"{f}_distinct", f"{f}_missing_share"]
    if schema.time_features.hour:
        names += [f"hour_{h}_share" for h in range(24)]
    if schema.time_features.day_of_week:
        names += [f"dow_{d}_share" for d in range(7)]
    return names


def top_values_of(top: dict, schema: Schema, top_values: int) -> dict[str, list[str]]:
    """The most frequent non-missing values of each categorical field (ties by value).

    Args:
        top: dict. `analysis.TopValues` of the input's values.
        schema: Schema. The event schema.
        top_values: int. Values kept per field.

    Returns:
        `{field: [value, ...]}`, most frequent first.
    """
    result = {}
    for field in schema.fields_of_kind("categorical"):
        ranked = sorted((-n, v) for v, n in top.get(analysis.vocab_table(field.name), []))
        result[field.name] = [v for _, v in ranked[:top_values]]
    return result


def key_features(schema: Schema, ts: np.ndarray, columns: list, top: dict[str, list[str]],
                 top_values: int, as_of_ms: int) -> dict[str, float]:
    """The features of one key's events.

    Args:
        schema: Schema. The event schema.
        ts: int64 array [n]. The key's event times, sorted (`preprocess.sorted_history`).
        columns: per field, its n values in that order.
        top: dict. Top values of each categorical field (`top_values_of`).
        top_values: int. Top values counted per categorical field.
        as_of_ms: int. Reference time of `recency_days`.

    Returns:
        `{column: value}` for every name of `feature_columns`.
    """
    n = len(ts)
    days = np.unique(ts // DAY_MS)
    row = {"n_events": float(n), "n_active_days": float(days.size),
           "recency_days": (as_of_ms - ts[-1]) / DAY_MS,
           "tenure_days": (ts[-1] - ts[0]) / DAY_MS,
           "days_since_first": (as_of_ms - ts[0]) / DAY_MS,
           "events_per_active_day": n / days.size,
           "mean_gap_days": float(np.diff(ts).mean() / DAY_MS) if n > 1 else float("nan")}
    by_name = dict(zip(schema.field_names, columns, strict=True))
    for field, column in zip(schema.fields, columns, strict=True):
        f = field.name
        if field.kind == "numeric":
            values = np.asarray(column, dtype=np.float64)
            present = values[np.isfinite(values)]
            stats = ((present.mean(), present.sum(), present.min(), present.max(), present.std(),
                      present[-1]) if present.size else (float("nan"),) * 6)
            row.update({f"{f}_{name}": float(value) for name, value in
                        zip(("mean", "sum", "min", "max", "std", "last"), stats, strict=True)})
            row[f"{f}_missing_share"] = 1.0 - present.size / n
            if field.bucket_by:
                row.update(category_stats(f, values, by_name[field.bucket_by],
                                          top[field.bucket_by], top_values))
            continue
        counts = Counter(column)
        missing = counts.pop("", 0)
        if field.kind == "categorical":  # every value of a multi-valued cell counts
            counts = artifacts.count_values(counts, field.separator)
        row[f"{f}_distinct"] = float(len(counts))
        row[f"{f}_missing_share"] = missing / n
        if field.kind == "categorical":
            values = top[field.name] + [None] * (top_values - len(top[field.name]))
            covered = 0
            for i, value in enumerate(values):
                count = counts.get(value, 0) if value is not None else 0
                covered += count
                row[f"{f}_top{i}_count"] = float(count)
                row[f"{f}_top{i}_share"] = count / n
            row[f"{f}_other_share"] = (sum(counts.values()) - covered) / n
    derived = events.time_features(ts, schema.time_features)
    if schema.time_features.hour:
        hours = np.bincount(derived["hour"], minlength=24) / n
        row.update({f"hour_{h}_share": float(hours[h]) for h in range(24)})
    if schema.time_features.day_of_week:
        dows = np.bincount(derived["day_of_week"], minlength=7) / n
        row.update({f"dow_{d}_share": float(dows[d]) for d in range(7)})
    return row


def category_stats(name: str, values: np.ndarray, categories: list[str], top: list[str],
                   top_values: int) -> dict[str, float]:
    """First, last, min, max, mean and count of a numeric field at each top category.

    Args:
        name: str. The numeric field.
        values: float array [n]. Its values at the key's events, in time order (NaN:
            missing).
        categories: list of str. The `bucket_by` field's value at each event.
        top: list of str. That field's most frequent values (`top_values_of`).
        top_values: int. Columns per field (a category past `top` gets NaN and count 0).

    Returns:
        `{f"{name}_by{i}_{stat}": value}` for every i below `top_values` and every stat of
        `CATEGORY_STATS` (NaN where the key has no value of that category, count 0).
    """
    row = {}
    categories = np.asarray(categories, dtype=object)
    for i in range(top_values):
        at = (categories == top[i]) & np.isfinite(values) if i < len(top) else None
        present = values[at] if at is not None else values[:0]
        stats = ((present[0], present[-1], present.min(), present.max(), present.mean())
                 if present.size else (float("nan"),) * 5)
        row.update({f"{name}_by{i}_{stat}": float(value)
                    for stat, value in zip(CATEGORY_STATS, (*stats, present.size), strict=True)})
    return row


class KeyFeaturesFn(beam.DoFn):
    """One grouped key (`{"events": [batches]}`) to one feature row and a summary.

    Args:
        schema_text: str. The schema YAML.
        top_values: int. Top values counted per categorical field.
    """

    def __init__(self, schema_text: str, top_values: int):
        self._schema_text = schema_text
        self._top_values = top_values

    def setup(self):
        self._schema = parse_schema(self._schema_text)

    def process(self, element, info):
        key, grouped = element
        batches = list(grouped["events"])
        if not batches:
            return
        ts, columns = sorted_history(batches, self._schema)
        row = key_features(self._schema, ts, columns, info["top_values"], self._top_values,
                           info["as_of_ms"])
        yield {"key": key, **row}
        yield beam.pvalue.TaggedOutput(SUMMARY, len(ts))


def _feature_info(files: analysis.FileSummary, schema_text: str, top_values: int,
                  as_of_ms: int | None, top: dict) -> dict:
    schema = parse_schema(schema_text)
    if as_of_ms is None:
        as_of_ms = files.last_timestamp_ms if files.last_timestamp_ms is not None else 0
    return {"columns": feature_columns(schema, top_values), "as_of_ms": int(as_of_ms),
            "top_values": top_values_of(top, schema, top_values)}


class WriteInfoFn(beam.DoFn):
    """Writes `feature_info.json` and `stats.json` once every count is known."""

    def process(self, output_dir, info, files, events_used, keys):
        rejected = dict(sorted(files.rejected.items()))
        stats = {"rows_in": files.rows_in, "rows_used": events_used,
                 "rows_rejected": sum(rejected.values()), "rejected_by_reason": rejected,
                 "blank_lines_skipped": files.blank_lines, "keys": keys,
                 "reconciled": files.rows_in == events_used + sum(rejected.values())}
        for name, value in (("feature_info.json", info), ("stats.json", stats)):
            with FileSystems.create(f"{output_dir}/{name}") as f:
                f.write((json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode())
        yield stats


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (Beam pipeline options pass through)."""
    parser = argparse.ArgumentParser(
        prog="python -m beam.features",
        description="Raw event tables + schema -> one row of hand-made features per key "
                    "(Parquet). Unknown flags go to Beam.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_job_flags(parser)
    parser.add_argument("--input_format", default="auto",
                        help="Input format (csv, jsonl, parquet); auto guesses from each "
                             "file's extension.")
    parser.add_argument("--top_values", type=int, default=10,
                        help="Most frequent values of each categorical field counted per key.")
    parser.add_argument("--as_of", default=None,
                        help="Reference time of recency, in the schema's timestamp format; "
                             "default: the latest event of the input.")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="Parquet shards; 0 lets the runner decide.")
    parser.add_argument("--shuffle", default="auto", choices=("auto", "beam", "files"),
                        help="How events are grouped by key (as in beam.preprocess).")
    add_verbose_flag(parser)
    runners.add_dask_workers_flag(parser)
    return parser


def build_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace, schema: Schema,
                   paths: list[str], as_of_ms: int | None,
                   spill: file_shuffle.Spill | None = None):
    """Adds the feature steps to a pipeline; returns the PCollection of the stats dict."""
    text = schema.source_text
    out = args.output_dir.rstrip("/")
    parsed = (pipeline
              | "ListFiles" >> beam.Create(list(enumerate(paths)))
              | "SpreadFiles" >> beam.Reshuffle()
              | "ParseEvents" >> beam.ParDo(ParseEventsFn(text, args.input_format, _ALL_KEYS,
                                                          spill=spill, window=args.window))
              .with_outputs(DEAD_LETTER, SUMMARY, COUNTS, NUMBERS, main="events"))
    files = parsed[SUMMARY] | "MergeFileSummaries" >> beam.CombineGlobally(
        analysis.MergeFileSummaries())
    top = parsed[COUNTS] | "TopValues" >> analysis.TopValues(args.top_values)
    info = files | "FeatureInfo" >> beam.Map(_feature_info, text, args.top_values, as_of_ms,
                                             beam.pvalue.AsSingleton(top))
    compute = KeyFeaturesFn(text, args.top_values)
    if spill is None:
        built = ({"events": parsed.events} | "GroupByKey" >> beam.CoGroupByKey()
                 | "KeyFeatures" >> beam.ParDo(compute, beam.pvalue.AsSingleton(info))
                 .with_outputs(SUMMARY, main="rows"))
    else:
        built = (pipeline
                 | "Partitions" >> beam.Create(range(spill.partitions))
                 | "SpreadPartitions" >> beam.Reshuffle()
                 | "KeyFeatures" >> beam.ParDo(
                     file_shuffle.GroupPartitionFn(spill, compute, side_inputs=1),
                     beam.pvalue.AsSingleton(info))
                 .with_outputs(SUMMARY, main="rows"))
    columns = feature_columns(schema, args.top_values)
    arrow_schema = pa.schema([("key", pa.string())] + [(c, pa.float64()) for c in columns])
    _ = built.rows | "WriteFeatures" >> beam.io.WriteToParquet(
        f"{out}/features", arrow_schema, file_name_suffix=".parquet",
        num_shards=args.num_shards)
    _ = parsed[DEAD_LETTER] | "WriteDeadLetters" >> beam.io.WriteToText(
        f"{out}/{DEAD_LETTER}/rejected", file_name_suffix=".jsonl")
    used = built[SUMMARY] | "EventsUsed" >> beam.CombineGlobally(sum)
    keys = built[SUMMARY] | "Keys" >> beam.combiners.Count.Globally()
    return (pipeline
            | "OutputDir" >> beam.Create([out])
            | "WriteInfo" >> beam.ParDo(WriteInfoFn(), beam.pvalue.AsSingleton(info),
                                        beam.pvalue.AsSingleton(files),
                                        beam.pvalue.AsSingleton(used),
                                        beam.pvalue.AsSingleton(keys)))


def run(argv=None, save_main_session=True) -> dict:
    """Runs the feature job.

    Args:
        argv: list of str or None. Command-line arguments (`sys.argv[1:]` when None).
        save_main_session: bool. Pickle the main session for remote workers.

    Returns:
        The stats written to `stats.json`.

    Raises:
        UsageError: bad arguments or unreadable input.
        SchemaError: the schema is not valid.
    """
    args, beam_args = build_parser().parse_known_args(argv)
    if args.top_values < 0:
        raise UsageError(f"--top_values must be 0 or positive, got {args.top_values}")
    args.window = time_window_of(args)
    schema = load_schema(args.schema)
    as_of_ms = None
    if args.as_of:
        try:
            as_of_ms = events.parse_timestamp_ms(args.as_of, schema.timestamp_format)
        except events.RejectedRow as e:
            raise UsageError(f"--as_of {args.as_of!r}: {e.detail}") from None
    paths = match_inputs(args.input)
    check_input_columns(paths, args.input_format, schema)
    beam_args = local_runner_args(runners.runner_args(beam_args), paths)
    local = any(a.endswith(LOCAL_RUNNER) or a.endswith("DirectRunner") for a in beam_args)
    spill = None
    out = args.output_dir.rstrip("/")
    args.output_dir = claim_output(out, args.overwrite)
    if args.shuffle == "files" or (args.shuffle == "auto" and local):
        spill = file_shuffle.Spill(f"{args.output_dir}/_shuffle_tmp",
                                   file_shuffle.partitions_for(paths))
    try:
        with runners.pipeline_on(beam_args, args.dask_workers, save_main_session) as pipeline:
            build_pipeline(pipeline, args, schema, paths, as_of_ms, spill)
            pipeline.run().wait_until_finish()
    finally:
        if spill is not None:
            file_shuffle.remove(spill)
    output_folder.publish(args.output_dir, out)
    with FileSystems.open(f"{out}/stats.json") as f:
        return json.loads(f.read())


def main(argv=None) -> int:
    """Command-line entry point: runs the job and prints a summary; one line on errors."""
    set_log_level(argv)
    try:
        stats = run(argv)
    except (UsageError, SchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rows in {stats['rows_in']}, used {stats['rows_used']}, rejected "
          f"{stats['rows_rejected']} {stats['rejected_by_reason'] or ''}; "
          f"{stats['keys']} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
