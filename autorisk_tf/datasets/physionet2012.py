r"""PhysioNet/CinC Challenge 2012 (set A) to an event table and the `death`, `long_stay` labels.

  python -m autorisk_tf.datasets.physionet2012 \
      --input ../shared/data/physionet2012/set-a.tar.gz \
      --outcomes ../shared/data/physionet2012/Outcomes-a.txt --output_dir real/physionet

Writes `events.csv` (schema `autorisk_tf/schemas/physionet2012.yaml`): one row per
observation, `record_id,timestamp,parameter,value`, where every stay is admitted at the same
fixed epoch (`ADMISSION`, 2012-01-01T00:00:00 UTC) and `timestamp` is that epoch plus the
file's `HH:MM` since admission (so the 48-hour window ends at `WINDOW_END` for every stay).
The `RecordID` line is the key, not an observation; a descriptor (`DESCRIPTORS`) of `-1`
means "not measured" and is dropped (counted).

Writes `labels.csv`: `death` is `In-hospital_death`; `long_stay` is 1 for a
`Length_of_stay` of 14 days or more, and empty where the length of stay is unknown (-1 in the
published file: 60 stays of set A, which the reference figures of `../shared/data` count as
short stays). SAPS-I and SOFA are severity scores computed from the same data: never inputs.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator

from autorisk_tf.datasets import tables

ADMISSION = dt.datetime(2012, 1, 1, tzinfo=dt.UTC)
WINDOW_END = "2012-01-03T00:00:00"  # admission + 48 hours: the `--as_of` of the tasks
DESCRIPTORS = ("Age", "Gender", "Height", "ICUType", "Weight")
LONG_STAY_DAYS = 14
EVENT_COLUMNS = ("record_id", "timestamp", "parameter", "value")
LABEL_COLUMNS = ("record_id", "death", "long_stay")


def minutes_to_timestamp(hh_mm: str) -> str:
    """`HH:MM` since admission (hours may pass 24) to an ISO 8601 time after `ADMISSION`.

    Raises:
        ValueError: not `HH:MM` with whole, non-negative numbers and minutes under 60.
    """
    hours, sep, minutes = hh_mm.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or int(minutes) >= 60:
        raise ValueError(f"time {hh_mm!r} is not HH:MM")
    when = ADMISSION + dt.timedelta(hours=int(hours), minutes=int(minutes))
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def stay_events(lines: Iterable[str], name: str = "<stay>") -> tuple[str, list[tuple],
                                                                      Counter]:
    """The key and observations of one stay file.

    Args:
        lines: iterable of str. The file's lines, `Time,Parameter,Value` header first.
        name: str. The file's name, for error messages.

    Returns:
        `(record_id, events, counts)`: event tuples in `EVENT_COLUMNS` order, in file order,
        and counts (`observations`, `descriptor_not_measured`).

    Raises:
        ValueError: a line without three columns, a bad time, or no `RecordID` line.
    """
    record_id, rows, counts = "", [], Counter()
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if number == 1 or not line:
            continue
        parts = line.split(",")
        if len(parts) != 3:
            raise ValueError(f"{name}:{number}: expected Time,Parameter,Value, got {line!r}")
        time, parameter, value = parts
        if parameter == "RecordID":
            record_id = value
            continue
        if parameter in DESCRIPTORS and float(value) == -1:
            counts["descriptor_not_measured"] += 1
            continue
        counts["observations"] += 1
        rows.append((time, parameter, value))
    if not record_id:
        raise ValueError(f"{name}: no RecordID line")
    try:
        events = [(record_id, minutes_to_timestamp(t), p, v) for t, p, v in rows]
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    return record_id, events, counts


def read_stays(path: str) -> Iterator[tuple[str, Iterable[str]]]:
    """`(file name, lines)` of every `.txt` stay file of the tarball (or a folder of them)."""
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.endswith(".txt"):
                with open(os.path.join(path, name), encoding="utf-8") as f:
                    yield name, f.read().splitlines()
        return
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".txt"):
                text = archive.extractfile(member).read().decode("utf-8")
                yield os.path.basename(member.name), text.splitlines()


def outcome_labels(lines: Iterable[str]) -> dict[str, tuple[int, int | str]]:
    """`{record_id: (death, long_stay)}` of the outcomes file (`long_stay` "" when unknown).

    Raises:
        ValueError: the header lacks a needed column.
    """
    reader = csv.DictReader(lines)
    needed = {"RecordID", "Length_of_stay", "In-hospital_death"}
    if not needed <= set(reader.fieldnames or ()):
        raise ValueError(f"outcomes need columns {sorted(needed)}, got {reader.fieldnames}")
    labels = {}
    for row in reader:
        days = float(row["Length_of_stay"])
        labels[row["RecordID"].strip()] = (int(row["In-hospital_death"]),
                                           "" if days < 0 else int(days >= LONG_STAY_DAYS))
    return labels


def build_tables(stays: Iterable[tuple[str, Iterable[str]]], outcomes: Iterable[str]
                 ) -> tuple[list[tuple], list[tuple], dict]:
    """Event rows of every stay and the label rows of the stays with events.

    Args:
        stays: iterable of `(file name, lines)` (`read_stays`).
        outcomes: iterable of str. Lines of the outcomes file, header first.

    Returns:
        `(events, labels, counts)`: event tuples in `EVENT_COLUMNS` order (stay by stay),
        label tuples in `LABEL_COLUMNS` order sorted by record id, and counts (`stays`,
        `observations`, `descriptor_not_measured`, `no_outcome`, `deaths`, `long_stays`,
        `long_stay_unknown`).
    """
    outcome = outcome_labels(outcomes)
    events, keys, counts = [], [], Counter()
    for name, lines in stays:
        record_id, rows, stay_counts = stay_events(lines, name)
        counts.update(stay_counts)
        if record_id not in outcome:
            counts["no_outcome"] += 1
        counts["stays"] += 1
        events.extend(rows)
        keys.append(record_id)
    labels = sorted((k, *outcome[k]) for k in keys if k in outcome)
    counts.update(deaths=sum(label[1] for label in labels),
                  long_stays=sum(label[2] == 1 for label in labels),
                  long_stay_unknown=sum(label[2] == "" for label in labels))
    return events, labels, dict(counts)


def write_tables(events: list[tuple], labels: list[tuple], folder: str) -> None:
    """Writes `events.csv` and `labels.csv` into `folder`."""
    tables.write_csv(os.path.join(folder, "events.csv"), EVENT_COLUMNS, events)
    tables.write_csv(os.path.join(folder, "labels.csv"), LABEL_COLUMNS, labels)


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m autorisk_tf.datasets.physionet2012",
        description="PhysioNet 2012 set A (set-a.tar.gz + Outcomes-a.txt) -> events.csv + "
                    "labels.csv (death, long_stay).")
    parser.add_argument("--input", required=True,
                        help="set-a.tar.gz, or a folder of its <RecordID>.txt files.")
    parser.add_argument("--outcomes", required=True, help="Outcomes-a.txt.")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    for path in (args.input, args.outcomes):
        if not os.path.exists(path):
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    try:
        with tables.open_text(args.outcomes) as f:
            events, labels, counts = build_tables(read_stays(args.input), f)
    except (ValueError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_tables(events, labels, args.output_dir)
    print(f"{counts['stays']} stays, {counts['observations']} observations "
          f"({counts.get('descriptor_not_measured', 0)} descriptors of -1 dropped); "
          f"{len(labels)} labelled: death {counts['deaths']}, long_stay {counts['long_stays']} "
          f"({counts['long_stay_unknown']} unknown); wrote {args.output_dir}/events.csv, "
          "labels.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
