r"""Online Retail (UCI 352) to an event table and a label table for one task.

  python -m autorisk_tf.datasets.online_retail \
      --input ../shared/data/online-retail/online_retail.csv.gz \
      --task country_non_uk --output_dir real/retail_country

Writes `events.csv` (schema `autorisk_tf/schemas/online_retail.yaml`) and `labels.csv`.
Tasks (see `../shared/data/README.md`):

- `country_non_uk`: every invoice line of a customer; the label is 1 when the customer's most
  frequent Country (by lines; a tie goes to the country seen first) is not the United Kingdom.
  Country is not an event column.
- `bought_after`: lines dated before 2011-09-09 only; the label is 1 when the customer has a
  non-cancelled invoice on or after that date.

Lines without a CustomerID cannot join any sequence: they are counted and left out.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from collections.abc import Iterable

from autorisk_tf.datasets import tables

TASKS = ("country_non_uk", "bought_after")
CUTOFF = "2011-09-09T00:00:00"
HOME_COUNTRY = "United Kingdom"
EVENT_COLUMNS = ("customer_id", "invoice_date", "stock_code", "description", "quantity",
                 "unit_price", "line_type")
LABEL_COLUMNS = ("customer_id", *TASKS)


def _event(row: dict) -> tuple:
    kind = "cancel" if row["InvoiceNo"].startswith("C") else "purchase"
    return (row["CustomerID"].strip(), row["InvoiceDate"], row["StockCode"],
            row["Description"].strip(), row["Quantity"], row["UnitPrice"], kind)


def build_tables(rows: Iterable[dict], task: str) -> tuple[list[tuple], list[tuple], dict]:
    """Event rows and label rows of one task.

    Args:
        rows: iterable of dict. Invoice lines with the file's columns (`InvoiceNo`,
            `StockCode`, `Description`, `Quantity`, `InvoiceDate`, `UnitPrice`,
            `CustomerID`, `Country`), in file order.
        task: str. `country_non_uk` or `bought_after`.

    Returns:
        `(events, labels, counts)`: event tuples in `EVENT_COLUMNS` order, label tuples in
        `LABEL_COLUMNS` order (the other task's column empty) sorted by customer, and counts
        (`rows_in`, `no_customer`, `after_cutoff`, `events`, `customers`, `positives`).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    events, countries, bought_after = [], {}, set()
    counts = Counter()
    for row in rows:
        counts["rows_in"] += 1
        customer = (row.get("CustomerID") or "").strip()
        if not customer:
            counts["no_customer"] += 1
            continue
        if task == "bought_after" and row["InvoiceDate"] >= CUTOFF:
            counts["after_cutoff"] += 1
            if not row["InvoiceNo"].startswith("C"):
                bought_after.add(customer)
            continue
        events.append(_event(row))
        countries.setdefault(customer, Counter())[row["Country"]] += 1
    labels = []
    for customer in sorted(countries):
        if task == "country_non_uk":
            # most_common keeps first-seen order among equal counts.
            country = countries[customer].most_common(1)[0][0]
            labels.append((customer, int(country != HOME_COUNTRY), ""))
        else:
            labels.append((customer, "", int(customer in bought_after)))
    column = 1 if task == "country_non_uk" else 2
    counts.update(events=len(events), customers=len(labels),
                  positives=sum(row[column] for row in labels))
    return events, labels, dict(counts)


def read_rows(path: str) -> Iterable[dict]:
    """Invoice lines of the published CSV (gzip or plain), as dicts of strings."""
    with tables.open_text(path) as f:
        yield from csv.DictReader(f)


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m autorisk_tf.datasets.online_retail",
        description="Online Retail invoice lines -> events.csv + labels.csv for one task.")
    parser.add_argument("--input", required=True, help="online_retail.csv.gz (or .csv).")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    if not os.path.exists(args.input):
        print(f"error: {args.input} not found", file=sys.stderr)
        return 2
    events, labels, counts = build_tables(read_rows(args.input), args.task)
    tables.write_csv(os.path.join(args.output_dir, "events.csv"), EVENT_COLUMNS, events)
    tables.write_csv(os.path.join(args.output_dir, "labels.csv"), LABEL_COLUMNS, labels)
    print(f"{args.task}: {counts['rows_in']} lines in, {counts.get('no_customer', 0)} without "
          f"a CustomerID left out, {counts.get('after_cutoff', 0)} on or after {CUTOFF} used "
          f"for labels only; {counts['events']} events of {counts['customers']} customers, "
          f"{counts['positives']} positive; wrote {args.output_dir}/events.csv, labels.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
