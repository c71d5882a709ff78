"""The event schema: one YAML file that drives preprocessing, model inputs and serving.

A schema names the sequence key column, the timestamp column, every event field with its
kind (categorical, numeric, text), the derived time features and the optional label columns.
`load_schema` validates it and raises `SchemaError` with the file, line and key at fault.

Example:
```python
schema = parse_schema('''
key: user_id
timestamp: {column: event_time}
fields:
  - {name: event_type, kind: categorical}
  - {name: amount, kind: numeric, num_buckets: 16, log: true, bucket_by: event_type}
''')
assert schema.field_names == ("event_type", "amount")
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml

KINDS = ("categorical", "numeric", "text")
TIMESTAMP_FORMATS = ("auto", "iso8601", "epoch_s", "epoch_ms")
TOKENIZERS = ("char", "whitespace")
LABEL_KINDS = ("binary", "numeric", "categorical")
# Model inputs derived from every schema; no field may take these names.
TIME_FEATURE_NAMES = ("time_delta", "time_hour", "time_day_of_week", "time_age")
RESERVED_NAMES = (*TIME_FEATURE_NAMES, "padding_mask")


class SchemaError(ValueError):
    """A schema file that cannot be used; the message names the file, line and key."""


@dataclasses.dataclass(frozen=True)
class CategoricalField:
    """A field whose values come from a vocabulary built on the training split.

    Args:
        name: str. Field name, used for features, vocabularies and model inputs.
        column: str. Column of the raw table. Defaults to `name`.
        max_vocab: int. Most frequent values kept; the rest map to the OOV id.
        min_count: int. Values seen fewer times on the training split map to OOV.
        separator: str. Non-empty for a multi-valued field (tags, genres, permissions):
            each cell is split on it, every value is counted in the vocabulary, and the
            model sums the embeddings of an event's values.
        max_values: int. Values kept per event of a multi-valued field (the first ones).
        hash_buckets: int. With N > 0, a value outside the vocabulary gets one of N ids of
            its own by a stable fingerprint of the text (`tf.strings.to_hash_bucket_fast`,
            FarmHash) instead of the one OOV id: for ids beyond a vocabulary (merchants,
            devices). `max_vocab: 0` then hashes every value. 0 (the default): off.
    """

    name: str
    column: str
    max_vocab: int = 10_000
    min_count: int = 1
    separator: str = ""
    max_values: int = 8
    hash_buckets: int = 0
    kind: str = "categorical"


@dataclasses.dataclass(frozen=True)
class NumericField:
    """A number bucketised on quantile boundaries computed on the training split.

    Args:
        name: str. Field name.
        column: str. Column of the raw table. Defaults to `name`.
        num_buckets: int. Number of quantile buckets.
        log: bool. Compute and apply boundaries on `sign(x) * log1p(|x|)`.
        bucket_by: str. A categorical field whose values each get their own boundaries
            (a lab value per test, an amount per event type); "" for one global set.
        min_count: int. With `bucket_by`, categories with fewer training values than this
            use the global boundaries.
        continuous: bool. Also feed the number itself next to its bucket id: standardised
            (per category with `bucket_by`, after the log with `log`), clipped to +-5, 0
            where missing (the bucket id tells missing from zero).
        max_abs: float. Values of larger magnitude are rejected as `bad_number`.
            Defaults to 1e15.
    """

    name: str
    column: str
    num_buckets: int = 32
    log: bool = False
    bucket_by: str = ""
    min_count: int = 100
    continuous: bool = False
    max_abs: float = 1e15
    kind: str = "numeric"


@dataclasses.dataclass(frozen=True)
class TextField:
    """A short text (item or merchant name) tokenised into a bag of tokens per event.

    Args:
        name: str. Field name.
        column: str. Column of the raw table. Defaults to `name`.
        tokenizer: str. `char` (Unicode code points, the default) or `whitespace`.
        max_tokens: int. Tokens kept per event (the first ones).
        max_vocab: int. Most frequent tokens kept in the token vocabulary.
        min_count: int. Tokens seen fewer times on the training split map to OOV.
    """

    name: str
    column: str
    tokenizer: str = "char"
    max_tokens: int = 32
    max_vocab: int = 8_000
    min_count: int = 2
    kind: str = "text"


@dataclasses.dataclass(frozen=True)
class TimeFeatures:
    """Features derived from the timestamps of a time-sorted sequence.

    Args:
        delta_buckets: int. Log2-scale buckets of the seconds since the previous event;
            0 switches the feature off.
        hour: bool. Hour of day.
        day_of_week: bool. Day of week (Monday is 0).
        utc_offset_hours: float. Offset applied before taking hour and day.
        age_buckets: int. Buckets of each event's age before the reference time (the latest
            event of the preprocessing input, or its `--as_of`), on a half-log2 scale of
            hours: `floor(2 * log2(1 + hours))`. Recency for tasks that depend on it
            (will the customer buy again?); 0 switches it off.
    """

    delta_buckets: int = 24
    hour: bool = True
    day_of_week: bool = True
    utc_offset_hours: float = 0.0
    age_buckets: int = 0


@dataclasses.dataclass(frozen=True)
class LabelColumn:
    """A label column of the separate label table.

    Args:
        name: str. Column name in the label table and label name downstream.
        kind: str. `binary` or `numeric` (stored as float) or `categorical` (string).
    """

    name: str
    kind: str = "binary"


Field = CategoricalField | NumericField | TextField


@dataclasses.dataclass(frozen=True)
class Schema:
    """A validated event schema.

    Args:
        key: str. Column holding the sequence key (user id).
        timestamp_column: str. Column holding the event time.
        timestamp_format: str. `auto`, `iso8601`, `epoch_s`, `epoch_ms` or a strptime
            pattern such as `%Y%m%d` (times without a zone are UTC).
        fields: tuple. The event fields, in order.
        time_features: TimeFeatures. The derived time features.
        labels: tuple of LabelColumn. Label columns of the label table.
        label_key: str. Key column of the label table. Defaults to `key`.
        csv_delimiter: str. Delimiter of CSV input; `whitespace` splits on runs of blanks.
    """

    key: str
    timestamp_column: str
    timestamp_format: str = "auto"
    fields: tuple[Field, ...] = ()
    time_features: TimeFeatures = TimeFeatures()
    labels: tuple[LabelColumn, ...] = ()
    label_key: str = ""
    csv_delimiter: str = ","
    source_text: str = dataclasses.field(default="", compare=False, repr=False)

    @property
    def field_names(self) -> tuple[str, ...]:
        """Names of the event fields, in schema order."""
        return tuple(f.name for f in self.fields)

    def fields_of_kind(self, kind: str) -> tuple[Field, ...]:
        """Returns the fields of one kind (`categorical`, `numeric` or `text`), in order."""
        return tuple(f for f in self.fields if f.kind == kind)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the label columns."""
        return tuple(label.name for label in self.labels)


class _LineLoader(yaml.SafeLoader):
    """A YAML loader whose mappings remember the line of every key."""


class _LineDict(dict):
    """A dict that knows the 1-based line of itself (`line`) and of each key (`lines`)."""

    line: int = 0
    lines: dict


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    result = _LineDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise SchemaError(f"line {key_node.start_mark.line + 1}: duplicate key '{key}'")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Checker:
    """Reads typed values out of a `_LineDict`, raising errors that name line and key."""

    def __init__(self, source: str):
        self._source = source

    def fail(self, mapping: Any, key: str | None, path: str, message: str):
        line = getattr(mapping, "lines", {}).get(key) or getattr(mapping, "line", 0)
        where = f"{self._source}:{line}" if line else self._source
        raise SchemaError(f"{where}: {path}: {message}")

    def mapping(self, mapping: Any, key: str, path: str, allowed: tuple[str, ...]) -> _LineDict:
        value = mapping.get(key)
        if value is None:
            value = _LineDict()
            value.line, value.lines = 0, {}
        if not isinstance(value, dict):
            self.fail(mapping, key, path, "must be a mapping")
        self.no_unknown_keys(value, path, allowed)
        return value

    def no_unknown_keys(self, mapping: Mapping, path: str, allowed: tuple[str, ...]):
        for key in mapping:
            if key not in allowed:
                self.fail(mapping, key, f"{path}.{key}",
                          f"unknown key (expected one of {', '.join(allowed)})")

    def get(self, mapping: Mapping, key: str, path: str, kind: type, default: Any,
            choices: tuple | None = None, minimum: float | None = None) -> Any:
        if key not in mapping or mapping[key] is None:
            if default is _REQUIRED:
                self.fail(mapping, None, f"{path}.{key}", "is required")
            return default
        value = mapping[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is float and isinstance(value, str):  # YAML 1.1 reads `1e15` as text
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(mapping, key, f"{path}.{key}",
                      f"must be {kind.__name__}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            self.fail(mapping, key, f"{path}.{key}",
                      f"unknown value '{value}' (expected one of {', '.join(choices)})")
        if minimum is not None and value < minimum:
            self.fail(mapping, key, f"{path}.{key}", f"must be at least {minimum}, got {value}")
        return value


_REQUIRED = object()
_FIELD_KEYS = {
    "categorical": ("name", "kind", "column", "max_vocab", "min_count", "separator",
                    "max_values", "hash_buckets"),
    "numeric": ("name", "kind", "column", "num_buckets", "log", "bucket_by", "min_count",
                "continuous", "max_abs"),
    "text": ("name", "kind", "column", "tokenizer", "max_tokens", "max_vocab", "min_count"),
}


def _parse_field(check: _Checker, item: Any, path: str) -> Field:
    if not isinstance(item, dict):
        check.fail(item, None, path, "must be a mapping with name and kind")
    name = check.get(item, "name", path, str, _REQUIRED)
    kind = check.get(item, "kind", path, str, _REQUIRED, choices=KINDS)
    check.no_unknown_keys(item, path, _FIELD_KEYS[kind])
    if not name or "/" in name:
        check.fail(item, "name", f"{path}.name", f"invalid field name '{name}' (no '/')")
    if name in RESERVED_NAMES:
        check.fail(item, "name", f"{path}.name",
                   f"field name '{name}' is reserved (one of {', '.join(RESERVED_NAMES)})")
    column = check.get(item, "column", path, str, name)
    if kind == "categorical":
        hash_buckets = check.get(item, "hash_buckets", path, int, 0, minimum=0)
        max_vocab = check.get(item, "max_vocab", path, int, 10_000, minimum=0)
        if max_vocab == 0 and not hash_buckets:
            check.fail(item, "max_vocab", f"{path}.max_vocab",
                       "0 keeps no value: give hash_buckets too, or at least 1")
        return CategoricalField(
            name, column, max_vocab=max_vocab,
            min_count=check.get(item, "min_count", path, int, 1, minimum=1),
            separator=check.get(item, "separator", path, str, ""),
            max_values=check.get(item, "max_values", path, int, 8, minimum=1),
            hash_buckets=hash_buckets)
    if kind == "numeric":
        return NumericField(
            name, column,
            num_buckets=check.get(item, "num_buckets", path, int, 32, minimum=2),
            log=check.get(item, "log", path, bool, False),
            bucket_by=check.get(item, "bucket_by", path, str, ""),
            min_count=check.get(item, "min_count", path, int, 100, minimum=1),
            continuous=check.get(item, "continuous", path, bool, False),
            max_abs=check.get(item, "max_abs", path, float, 1e15, minimum=0.0))
    return TextField(
        name, column,
        tokenizer=check.get(item, "tokenizer", path, str, "char", choices=TOKENIZERS),
        max_tokens=check.get(item, "max_tokens", path, int, 32, minimum=1),
        max_vocab=check.get(item, "max_vocab", path, int, 8_000, minimum=1),
        min_count=check.get(item, "min_count", path, int, 2, minimum=1))


def parse_schema(text: str, source: str = "<schema>") -> Schema:
    """Parses and validates schema YAML text.

    Args:
        text: str. The YAML document.
        source: str. Name used in error messages (the file path).

    Returns:
        The validated `Schema`.

    Raises:
        SchemaError: the text is not valid YAML or not a valid schema.
    """
    check = _Checker(source)
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except SchemaError as e:
        raise SchemaError(f"{source}:{str(e).removeprefix('line ')}") from None
    except yaml.YAMLError as e:
        raise SchemaError(f"{source}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{source}: the schema must be a YAML mapping")
    check.no_unknown_keys(doc, "schema",
                          ("key", "timestamp", "fields", "time_features", "labels", "csv"))
    key = check.get(doc, "key", "schema", str, _REQUIRED)
    ts = check.mapping(doc, "timestamp", "timestamp", ("column", "format"))
    if not ts:
        check.fail(doc, None, "schema.timestamp", "is required")
    ts_format = check.get(ts, "format", "timestamp", str, "auto")
    if ts_format not in TIMESTAMP_FORMATS and "%" not in ts_format:
        check.fail(ts, "format", "timestamp.format",
                   f"unknown format '{ts_format}' (expected one of "
                   f"{', '.join(TIMESTAMP_FORMATS)} or a strptime pattern)")
    items = doc.get("fields")
    if not isinstance(items, list) or not items:
        check.fail(doc, "fields", "schema.fields", "must be a non-empty list of fields")
    fields, seen = [], {}
    for i, item in enumerate(items):
        field = _parse_field(check, item, f"fields[{i}]")
        if field.name in seen:
            check.fail(item, "name", f"fields[{i}].name",
                       f"duplicate field '{field.name}' (first at fields[{seen[field.name]}])")
        if field.column in (key,):
            check.fail(item, "column", f"fields[{i}].column", "the key column is not a field")
        seen[field.name] = i
        fields.append(field)
    single = [f.name for f in fields if f.kind == "categorical" and not f.separator]
    hashed = {f.name for f in fields if getattr(f, "hash_buckets", 0)}
    for i, (item, field) in enumerate(zip(items, fields, strict=True)):
        by = getattr(field, "bucket_by", "")
        if by and by not in single:
            check.fail(item, "bucket_by", f"fields[{i}].bucket_by",
                       f"'{by}' is not a single-valued categorical field of this schema "
                       f"(those are: {', '.join(single) or 'none'})")
        if by in hashed:
            check.fail(item, "bucket_by", f"fields[{i}].bucket_by",
                       f"'{by}' has hash_buckets: the categories of bucket_by are its "
                       "vocabulary's values alone")
    tf_map = check.mapping(doc, "time_features", "time_features",
                           ("delta_buckets", "hour", "day_of_week", "utc_offset_hours",
                            "age_buckets"))
    time_features = TimeFeatures(
        delta_buckets=check.get(tf_map, "delta_buckets", "time_features", int, 24, minimum=0),
        hour=check.get(tf_map, "hour", "time_features", bool, True),
        day_of_week=check.get(tf_map, "day_of_week", "time_features", bool, True),
        utc_offset_hours=check.get(tf_map, "utc_offset_hours", "time_features", float, 0.0),
        age_buckets=check.get(tf_map, "age_buckets", "time_features", int, 0, minimum=0))
    label_map = check.mapping(doc, "labels", "labels", ("key", "columns"))
    labels = []
    for i, item in enumerate(label_map.get("columns") or []):
        path = f"labels.columns[{i}]"
        if isinstance(item, str):
            labels.append(LabelColumn(item))
            continue
        if not isinstance(item, dict):
            check.fail(label_map, "columns", path, "must be a name or {name, kind}")
        check.no_unknown_keys(item, path, ("name", "kind"))
        labels.append(LabelColumn(
            check.get(item, "name", path, str, _REQUIRED),
            check.get(item, "kind", path, str, "binary", choices=LABEL_KINDS)))
    if len({label.name for label in labels}) != len(labels):
        check.fail(label_map, "columns", "labels.columns", "duplicate label name")
    csv_map = check.mapping(doc, "csv", "csv", ("delimiter",))
    return Schema(
        key=key,
        timestamp_column=check.get(ts, "column", "timestamp", str, _REQUIRED),
        timestamp_format=ts_format,
        fields=tuple(fields),
        time_features=time_features,
        labels=tuple(labels),
        label_key=check.get(label_map, "key", "labels", str, key),
        csv_delimiter=check.get(csv_map, "delimiter", "csv", str, ","),
        source_text=text,
    )


def load_schema(path: str) -> Schema:
    """Loads and validates a schema file (local path or any `tf.io.gfile` filesystem).

    Args:
        path: str. Path of the YAML file.

    Returns:
        The validated `Schema`.

    Raises:
        SchemaError: the file cannot be read or is not a valid schema.
    """
    from autorisk_tf.data import fileio

    try:
        text = fileio.read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: cannot read schema: {e}") from None
    return parse_schema(text, source=path)
