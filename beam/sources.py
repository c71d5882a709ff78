"""Readers of raw event tables: CSV (or whitespace-separated), JSON Lines and Parquet.

Each reader streams one file (local path or any filesystem Beam knows, such as gs://, and
gzip or bzip2 compressed by extension) as `RawRow`s: a row number, the row as a mapping of
column to value, and its raw text; or a rejection with a reason when the row itself cannot
be read (invalid UTF-8, wrong column count, malformed JSON or CSV). Nothing is skipped
silently: blank lines are counted by the caller from `RawRow.blank`.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import itertools
import json
from collections.abc import Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from autorisk_tf.data import events

FORMATS = ("csv", "jsonl", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl",
               ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclasses.dataclass(slots=True)
class RawRow:
    """One row of a raw table.

    Args:
        line: int. 1-based line (CSV, JSON Lines) or row number (Parquet).
        raw: str. The row as text, for dead-letter records.
        row: dict or None. Column to value; None when the row was rejected.
        reason: str. Rejection reason when `row` is None.
        detail: str. What exactly is wrong.
        blank: bool. A blank line (not a row).
    """

    line: int
    raw: str
    row: dict | None = None
    reason: str = ""
    detail: str = ""
    blank: bool = False


def detect_format(path: str) -> str:
    """Guesses the format of a file from its extension (`.gz` and `.bz2` are looked through).

    Args:
        path: str. File path.

    Returns:
        One of `FORMATS`.

    Raises:
        ValueError: the extension is not known.
    """
    name = path.lower()
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    for extension, fmt in _EXTENSIONS.items():
        if name.endswith(extension):
            return fmt
    raise ValueError(f"{path}: cannot tell the format from the extension; pass --input_format "
                     f"({', '.join(FORMATS)})")


def read_rows(path: str, fmt: str, delimiter: str = ",") -> Iterator[RawRow]:
    """Streams the rows of one file.

    Args:
        path: str. The file.
        fmt: str. `csv`, `jsonl` or `parquet`.
        delimiter: str. CSV delimiter; `whitespace` splits on runs of blanks.

    Yields:
        `RawRow`s in file order.
    """
    if fmt == "parquet":
        yield from _read_parquet(path)
        return
    with FileSystems.open(path) as handle:
        if fmt == "jsonl":
            yield from _read_jsonl(handle)
        elif delimiter == "whitespace":
            yield from _read_whitespace(handle)
        else:
            yield from _read_csv(handle, delimiter)


def _decode(raw: bytes) -> tuple[str | None, str]:
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"byte {e.start}: {e.reason}"


def _escaped(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")


def _read_jsonl(handle) -> Iterator[RawRow]:
    for line, raw in enumerate(handle, start=1):
        text, error = _decode(raw)
        if text is None:
            yield RawRow(line, _escaped(raw), reason=events.INVALID_UTF8, detail=error)
            continue
        text = text.strip()
        if not text:
            yield RawRow(line, "", blank=True)
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            yield RawRow(line, text, reason=events.MALFORMED_JSON, detail=str(e))
            continue
        if not isinstance(row, dict):
            yield RawRow(line, text, reason=events.MALFORMED_JSON,
                         detail=f"a line must hold a JSON object, not {type(row).__name__}")
            continue
        if "\\u" in text and _has_lone_surrogate(row):
            yield RawRow(line, text, reason=events.INVALID_UTF8,
                         detail="a \\u escape decodes to a lone surrogate (not UTF-8)")
            continue
        yield RawRow(line, text, row=row)


def _has_lone_surrogate(row: dict) -> bool:
    """Whether a JSON escape such as backslash-ud800 left a string no UTF-8 can hold."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _header(handle, split) -> tuple[list[str], int]:
    """The column names of the first non-blank line and its line number.

    Raises:
        ValueError: the header is not UTF-8, or names a column twice (a row could not be
            read without losing one of them).
    """
    for line, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8-sig").strip("\r\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"the header (line {line}) is not valid UTF-8 at byte "
                             f"{e.start}: {_escaped(raw)}") from None
        if text.strip():
            names = [name.strip() for name in split(text)]
            _check_unique(names)
            return names, line
    return [], 0


def _check_unique(names: list[str]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"the header names {', '.join(map(repr, repeated))} more than once: "
                         f"{', '.join(names)}")


def _read_whitespace(handle) -> Iterator[RawRow]:
    header, line = _header(handle, str.split)
    for line, raw in enumerate(handle, start=line + 1):  # noqa: B020 - continues the count
        text, error = _decode(raw)
        if text is None:
            yield RawRow(line, _escaped(raw), reason=events.INVALID_UTF8, detail=error)
            continue
        text = text.rstrip("\r\n")
        yield _row_from_cells(line, text, header, text.split())


def _row_from_cells(line: int, text: str, header: list[str], cells: list[str]) -> RawRow:
    if not cells:
        return RawRow(line, text, blank=True)
    if len(cells) != len(header):
        return RawRow(line, text, reason=events.WRONG_COLUMN_COUNT,
                      detail=f"{len(cells)} columns, the header has {len(header)}")
    return RawRow(line, text, dict(zip(header, cells, strict=False)))  # lengths checked


def _read_csv(handle, delimiter: str) -> Iterator[RawRow]:
    header, first = _header(handle, lambda t: next(csv.reader([t], delimiter=delimiter)))
    state = {"line": first, "bad": [], "raw": []}

    def decoded_lines():
        for raw in handle:
            state["line"] += 1
            text, error = _decode(raw)
            if text is None:
                state["bad"].append(RawRow(state["line"], _escaped(raw),
                                           reason=events.INVALID_UTF8, detail=error))
                continue
            state["raw"].append(text)
            yield text

    reader = csv.reader(decoded_lines(), delimiter=delimiter)
    while True:
        try:
            cells = next(reader)
            error = None
        except StopIteration:
            break
        except csv.Error as e:
            cells, error = None, str(e)
        yield from state["bad"]
        state["bad"].clear()
        text = "".join(state["raw"]).rstrip("\r\n")
        state["raw"].clear()
        if error is not None:
            yield RawRow(state["line"], text, reason=events.MALFORMED_CSV, detail=error)
        else:
            yield _row_from_cells(state["line"], text, header, cells)
    yield from state["bad"]


def _read_parquet(path: str) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        line = 0
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=65_536):
            for row in batch.to_pylist():
                line += 1
                yield RawRow(line, "", row=row)


def raw_text(row: RawRow) -> str:
    """The raw text of a row for a dead-letter record (JSON for Parquet rows)."""
    if row.raw or row.row is None:
        return row.raw
    return json.dumps(row.row, ensure_ascii=False, default=str)


def columns(path: str, fmt: str, delimiter: str = ",", sample: int = 100) -> list[str]:
    """The column names of a file, read before any row is processed.

    Args:
        path: str. The file.
        fmt: str. `csv`, `jsonl` or `parquet`.
        delimiter: str. CSV delimiter (`whitespace` for runs of blanks).
        sample: int. JSON Lines: the keys of the first `sample` objects count.

    Returns:
        The header (CSV), the schema's field names (Parquet), or the keys seen in the first
        records (JSON Lines), in file order.

    Raises:
        ValueError: naming the file, for a header that is not UTF-8 or names a column twice.
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            names = list(pq.ParquetFile(f).schema_arrow.names)
        try:
            _check_unique(names)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return names
    with FileSystems.open(path) as handle:
        if fmt == "csv":
            split = str.split if delimiter == "whitespace" else (
                lambda t: next(csv.reader([t], delimiter=delimiter)))
            try:
                return _header(handle, split)[0]
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        seen: dict[str, None] = {}
        for row in itertools.islice((r.row for r in _read_jsonl(handle) if r.row), sample):
            seen.update(dict.fromkeys(row))
        return list(seen)


def check_columns(path: str, fmt: str, required: dict[str, str], delimiter: str = ",") -> None:
    """Checks that a file has every column the schema reads, before any row is read.

    Args:
        path: str. The file.
        fmt: str. Its format.
        required: dict. Column name to what the schema uses it for (e.g. "field 'amount'").
        delimiter: str. CSV delimiter.

    Raises:
        ValueError: one line naming the file, the first missing column and its use, the
            columns that are there, and a close match when one exists.
    """
    present = columns(path, fmt, delimiter)
    for column, use in required.items():
        if column in present:
            continue
        lowered = {name.lower(): name for name in present}
        close = ([lowered[column.lower()]] if column.lower() in lowered
                 else difflib.get_close_matches(column, present, n=1, cutoff=0.6))
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{path} has no column {column!r} ({use}); its columns are "
                         f"{', '.join(present) or 'none'}{hint}")
