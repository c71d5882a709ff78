"""Shared helpers of the dataset builders: open a possibly compressed file, write tables."""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterable, Sequence


def open_text(path: str) -> io.TextIOBase:
    """Opens a UTF-8 text file, gunzipping `.gz` files."""
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Writes a CSV file (parent folders created); returns the number of data rows."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count
