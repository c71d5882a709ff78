r"""CDNOW purchase log to an event table and the `bought_again` label table.

  python -m autorisk_tf.datasets.cdnow --input ../shared/data/cdnow/CDNOW_master.txt \
      --output_dir real/cdnow

Writes `events.txt` (whitespace-separated, as the source; schema
`autorisk_tf/schemas/cdnow.yaml`) with every purchase dated before 1997-10-01, and
`labels.csv`: `bought_again` is 1 when the customer has any purchase on or after that date.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterable

from autorisk_tf.datasets import tables

CUTOFF = "19971001"
EVENT_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")


def build_tables(lines: Iterable[str]) -> tuple[list[tuple], list[tuple], dict]:
    """Event rows before the cut-off and one `bought_again` label per customer.

    Args:
        lines: iterable of str. Lines of the published file, header first.

    Returns:
        `(events, labels, counts)`: event tuples in `EVENT_COLUMNS` order, `(customer_id,
        bought_again)` tuples sorted by customer (customers with history only), and counts.

    Raises:
        ValueError: a data line without four columns.
    """
    events, history, again = [], set(), set()
    counts = Counter()
    lines = iter(lines)
    next(lines, None)  # header
    for number, line in enumerate(lines, start=2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise ValueError(f"line {number}: expected 4 columns, got {len(parts)}: {line!r}")
        counts["rows_in"] += 1
        customer, date = parts[0], parts[1]
        if date >= CUTOFF:
            again.add(customer)
            counts["after_cutoff"] += 1
            continue
        history.add(customer)
        events.append(tuple(parts))
    labels = [(customer, int(customer in again)) for customer in sorted(history)]
    counts.update(events=len(events), customers=len(labels),
                  positives=sum(label for _, label in labels))
    return events, labels, dict(counts)


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m autorisk_tf.datasets.cdnow",
        description="CDNOW_master.txt -> events.txt (before 1997-10-01) + labels.csv.")
    parser.add_argument("--input", required=True, help="CDNOW_master.txt.")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    if not os.path.exists(args.input):
        print(f"error: {args.input} not found", file=sys.stderr)
        return 2
    with tables.open_text(args.input) as f:
        events, labels, counts = build_tables(f)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "events.txt"), "w", encoding="utf-8") as f:
        f.write(" ".join(EVENT_COLUMNS) + "\n")
        f.writelines(" ".join(event) + "\n" for event in events)
    tables.write_csv(os.path.join(args.output_dir, "labels.csv"),
                     ("customer_id", "bought_again"), labels)
    print(f"bought_again: {counts['rows_in']} purchases in, {counts['events']} before "
          f"{CUTOFF} kept as events, {counts['customers']} customers, {counts['positives']} "
          f"positive; wrote {args.output_dir}/events.txt, labels.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
