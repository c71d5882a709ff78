"""Preprocessing artifacts: vocabularies, bucket boundaries, text-token vocabularies, stats.

The Beam job analyses the training split and writes an `artifacts/` folder:

  schema.yaml             copy of the schema, so later stages need only this folder
  vocabularies.json       {field: [[value, count], ...]} most frequent first
  text_vocabularies.json  {field: [[token, count], ...]} most frequent first
  boundaries.json         {field: [b1, ..., bk]} quantile boundaries in raw units
  category_boundaries.json  {field: {category: [b1, ...]}} for `bucket_by` fields
  numeric_scales.json     {field: {mean, std, categories: {category: [mean, std]}}} of
                          `continuous` fields (after the log transform with `log`)
  stats.json              rows read, used, rejected by reason, users, length percentiles

Id layout shared by every id-valued input of the model: 0 padding, 1 missing, 2 out of
vocabulary, 3 mask, then the vocabulary in order (or the buckets, for numbers).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from autorisk_tf.contract import PREPROCESSING_FILE
from autorisk_tf.data import fileio
from autorisk_tf.data.schema import Schema, parse_schema

PAD_ID = 0
MISSING_ID = 1
OOV_ID = 2
MASK_ID = 3
NUM_RESERVED_IDS = 4

SCHEMA_FILE = "schema.yaml"
VOCABULARIES_FILE = "vocabularies.json"
TEXT_VOCABULARIES_FILE = "text_vocabularies.json"
BOUNDARIES_FILE = "boundaries.json"
CATEGORY_BOUNDARIES_FILE = "category_boundaries.json"
NUMERIC_SCALES_FILE = "numeric_scales.json"
STATS_FILE = "stats.json"

_ASCII_WHITESPACE = re.compile(r"[ \t\n\r\v\f]+")


def tokenize(text: str, tokenizer: str) -> list[str]:
    """Splits a text field value into tokens.

    Args:
        text: str. The raw text.
        tokenizer: str. `char` (Unicode code points, as `tf.strings.unicode_split`) or
            `whitespace` (runs of ASCII whitespace, as `tf.strings.split`).

    Returns:
        The tokens, in order.
    """
    if tokenizer == "char":
        return list(text)
    return [token for token in _ASCII_WHITESPACE.split(text) if token]


def split_values(cell: str, separator: str) -> list[str]:
    """The values of a multi-valued categorical cell, as the preprocessing layer splits it.

    Args:
        cell: str. The raw cell ("" when missing).
        separator: str. The field's separator; "" for a single-valued field.

    Returns:
        The non-empty values, in order (the cell itself when there is no separator).
    """
    if not separator:
        return [cell] if cell else []
    return [value for value in cell.split(separator) if value]


def count_values(cells: Mapping[str, int], separator: str) -> Counter:
    """Counts of each value of categorical cells (every value of a multi-valued cell).

    Args:
        cells: Mapping. Raw cell to how often it occurs.
        separator: str. The field's separator; "" for a single-valued field.

    Returns:
        Value to count ("" is never counted).
    """
    counts = Counter()
    for cell, count in cells.items():
        for value in split_values(cell, separator):
            counts[value] += count
    return counts


def build_vocabulary(counts: Mapping[str, int], max_vocab: int,
                     min_count: int) -> list[tuple[str, int]]:
    """Keeps the most frequent values: count descending, then value, ascending.

    Args:
        counts: Mapping. Value to count; the empty string (missing) is never kept.
        max_vocab: int. Most values kept.
        min_count: int. Values seen fewer times are dropped.

    Returns:
        `[(value, count), ...]`, most frequent first.
    """
    kept = [(v, c) for v, c in counts.items() if v != "" and c >= min_count]
    kept.sort(key=lambda item: (-item[1], item[0]))
    return kept[:max_vocab]


def log_transform(x: np.ndarray) -> np.ndarray:
    """`sign(x) * log1p(|x|)`: the scale of `log` numeric fields."""
    return np.sign(x) * np.log1p(np.abs(x))


def standardisation(count: int, mean: float, std: float) -> list[float]:
    """The stored `[mean, std]` of a `continuous` numeric field (or of one category of it).

    Args:
        count: int. Values measured.
        mean: float. Their mean (after the log transform for `log` fields).
        std: float. Their standard deviation.

    Returns:
        `[mean, std]` to 10 significant digits; `[0, 1]` without values, and std 1 where the
        values are constant.
    """
    if not count:
        return [0.0, 1.0]
    return [float(f"{mean:.10g}"), float(f"{std:.10g}") if std > 0 else 1.0]


def _inverse_log_transform(y: np.ndarray) -> np.ndarray:
    return np.sign(y) * np.expm1(np.abs(y))


def quantile_boundaries(values: Iterable[float], num_buckets: int, log: bool) -> list[float]:
    """Computes bucket boundaries at the quantiles 1/B, ..., (B-1)/B of the values.

    Args:
        values: iterable of float. Sample of the field; NaN (missing) is ignored.
        num_buckets: int. Number of buckets B.
        log: bool. Interpolate quantiles on `sign(x) * log1p(|x|)`; boundaries are returned
            in raw units either way, so bucketing needs no transform.

    Returns:
        Strictly increasing boundaries (duplicates removed, so fewer than B-1 when the data
        has few distinct values); bucket i holds `boundaries[i-1] <= x < boundaries[i]`.
    """
    array = np.asarray(list(values), dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return []
    if log:
        array = log_transform(array)
    points = np.quantile(array, np.arange(1, num_buckets) / num_buckets)
    if log:
        points = _inverse_log_transform(points)
    # 10 significant digits undo the round-off of the log round trip (16.049999... -> 16.05).
    return [float(f"{b:.10g}") for b in np.unique(points)]


@dataclasses.dataclass(frozen=True)
class PreprocessingOptions:
    """How `beam.preprocess` cut the sequences: what training and export must repeat.

    Args:
        max_len: int or None. Most recent events kept per example.
        window_stride: int. 0: the most recent events only; else the stride of windows.
        reference_time_ms: int or None. The time event ages are measured to.
    """

    max_len: int | None = None
    window_stride: int = 0
    reference_time_ms: int | None = None

    @classmethod
    def from_stats(cls, stats: dict) -> PreprocessingOptions:
        """The options a preprocessing run recorded in its `stats.json`."""
        options = stats.get("options", {})
        return cls(options.get("max_len"), options.get("window_stride", 0),
                   stats.get("reference_time_ms"))

    def save(self, folder: str) -> None:
        """Writes `preprocessing.json` into a training run folder."""
        fileio.write_text(fileio.join(folder, PREPROCESSING_FILE),
                          json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: str) -> PreprocessingOptions:
        """Reads `preprocessing.json` of a training run folder (defaults when absent).

        Raises:
            ValueError: the file names an unknown option.
        """
        path = fileio.join(folder, PREPROCESSING_FILE)
        if not fileio.exists(path):
            return cls()
        values = json.loads(fileio.read_text(path))
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown option(s) {unknown}")
        return cls(**values)


@dataclasses.dataclass
class Artifacts:
    """Everything the model and serving need from preprocessing.

    Args:
        schema: Schema. The schema the data was written with.
        vocabularies: dict. Categorical field to `[(value, count), ...]`.
        text_vocabularies: dict. Text field to `[(token, count), ...]`.
        boundaries: dict. Numeric field to its bucket boundaries.
        stats: dict. The statistics of the preprocessing run.
        category_boundaries: dict. `bucket_by` field to `{category: boundaries}` for the
            categories with enough training values (the others use `boundaries`).
        numeric_scales: dict. `continuous` field to `{"mean", "std", "categories":
            {category: [mean, std]}}` (categories as in `category_boundaries`).
    """

    schema: Schema
    vocabularies: dict
    text_vocabularies: dict
    boundaries: dict
    stats: dict = dataclasses.field(default_factory=dict)
    category_boundaries: dict = dataclasses.field(default_factory=dict)
    numeric_scales: dict = dataclasses.field(default_factory=dict)

    @property
    def reference_time_ms(self) -> int | None:
        """The time event ages are measured to (`time_features.age_buckets`), or None."""
        return self.stats.get("reference_time_ms")

    @property
    def preprocessing(self) -> PreprocessingOptions:
        """The options the sequences were cut with (from `stats.json`)."""
        return PreprocessingOptions.from_stats(self.stats)

    def vocabulary(self, field: str) -> list[str]:
        """Values of a categorical field in id order (id = index + NUM_RESERVED_IDS)."""
        return [value for value, _ in self.vocabularies[field]]

    def text_vocabulary(self, field: str) -> list[str]:
        """Tokens of a text field in id order (id = index + NUM_RESERVED_IDS)."""
        return [token for token, _ in self.text_vocabularies[field]]

    def save(self, directory: str) -> None:
        """Writes the artifacts into `directory` (local or gs://)."""
        fileio.write_text(fileio.join(directory, SCHEMA_FILE), self.schema.source_text)
        for name, payload in ((VOCABULARIES_FILE, self.vocabularies),
                              (TEXT_VOCABULARIES_FILE, self.text_vocabularies),
                              (BOUNDARIES_FILE, self.boundaries),
                              (CATEGORY_BOUNDARIES_FILE, self.category_boundaries),
                              (NUMERIC_SCALES_FILE, self.numeric_scales),
                              (STATS_FILE, self.stats)):
            fileio.write_text(fileio.join(directory, name),
                              json.dumps(payload, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: str) -> Artifacts:
        """Reads artifacts written by `save` (the `artifacts/` folder of a Beam run)."""
        def read(name, default=None):
            path = fileio.join(directory, name)
            if default is not None and not fileio.exists(path):
                return default  # written by a version without this file
            return json.loads(fileio.read_text(path))

        schema_path = fileio.join(directory, SCHEMA_FILE)
        schema = parse_schema(fileio.read_text(schema_path), source=schema_path)
        as_pairs = lambda d: {k: [(v, c) for v, c in pairs] for k, pairs in d.items()}  # noqa: E731
        return cls(schema=schema,
                   vocabularies=as_pairs(read(VOCABULARIES_FILE)),
                   text_vocabularies=as_pairs(read(TEXT_VOCABULARIES_FILE)),
                   boundaries=read(BOUNDARIES_FILE),
                   stats=read(STATS_FILE),
                   category_boundaries=read(CATEGORY_BOUNDARIES_FILE, {}),
                   numeric_scales=read(NUMERIC_SCALES_FILE, {}))
