"""Raw event rows to the instances the `serving_default` signature takes.

The client, the similar-user search and the tests build requests the same way: rows are
parsed by the Beam job's own `RowParser` (a row it would reject is an error here too),
grouped per user and padded to the longest user.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from autorisk_tf.data import events
from autorisk_tf.data.schema import Schema
from autorisk_tf.data.sequence_example import LENGTH_INPUT, TIMESTAMP_INPUT


def instances_from_rows(rows: Iterable[Mapping], schema: Schema,
                        order: Sequence[str] | None = None) -> tuple[list[str], list[dict]]:
    """Groups raw event rows per user into `serving_default` instances.

    Args:
        rows: iterable of Mapping. Column name to raw cell, as read from the event table.
        schema: Schema. The event schema (column names, kinds, timestamp format).
        order: sequence of str or None. Users in output order (default: first seen first).

    Returns:
        `(keys, instances)`: one instance per user, each a dict with every field's values,
        `timestamp_ms` and `length`, padded ("" / NaN / 0) to the longest user. Events keep
        the rows' order; the model sorts them by time as `beam.preprocess` does.

    Raises:
        ValueError: a row the Beam job would reject (its reason and detail), or a user of
            `order` without rows.
    """
    parser = events.RowParser(schema)
    per_user: dict[str, list] = {}
    for index, row in enumerate(rows):
        try:
            key, ts_ms, values = parser.parse(row)
        except events.RejectedRow as e:
            raise ValueError(f"row {index}: {e.reason}: {e.detail}") from None
        per_user.setdefault(key, []).append((ts_ms, values))
    keys = list(order) if order is not None else list(per_user)
    missing = [key for key in keys if key not in per_user]
    if missing:
        raise ValueError(f"no rows for user(s) {missing[:5]}")
    steps = max((len(per_user[key]) for key in keys), default=0)
    instances = []
    for key in keys:
        user = per_user[key]
        pad = steps - len(user)
        instance = {TIMESTAMP_INPUT: [ts for ts, _ in user] + [0] * pad,
                    LENGTH_INPUT: len(user)}
        for i, field in enumerate(schema.fields):
            fill = math.nan if field.kind == "numeric" else ""
            instance[field.name] = [values[i] for _, values in user] + [fill] * pad
        instances.append(instance)
    return keys, instances


def to_columns(instances: list[dict]) -> dict[str, np.ndarray]:
    """Instances to the batched arrays a signature takes in-process.

    Returns:
        Input name to array: int64 for `timestamp_ms` and `length`, UTF-8 bytes for
        string fields, float32 for numeric ones.
    """
    columns = {}
    for name in instances[0]:
        values = np.asarray([instance[name] for instance in instances])
        if name in (LENGTH_INPUT, TIMESTAMP_INPUT):
            columns[name] = values.astype(np.int64)
        elif values.dtype.kind == "U":
            columns[name] = np.char.encode(values, "utf-8")
        else:
            columns[name] = values.astype(np.float32)
    return columns
