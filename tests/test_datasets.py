import gzip

import pytest

from autorisk_tf.datasets import cdnow, online_retail

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
LINES = [
    # customer 1: two UK lines, one French line -> UK (0); buys again after the cut-off
    "536365,85123A, WHITE HEART ,6,2011-01-01T08:26:00,2.55,1,United Kingdom",
    "536366,71053,LANTERN,6,2011-02-01T08:26:00,3.39,1,United Kingdom",
    "536367,22139,\"TEA, SET\",1,2011-09-10T10:00:00,5.0,1,France",
    # customer 2: one French line then one UK line: a tie goes to the first seen (France)
    "536368,22139,\"TEA, SET\",2,2011-03-01T09:00:00,5.0,2,France",
    "C536369,22139,\"TEA, SET\",-2,2011-03-02T09:00:00,5.0,2,United Kingdom",
    # customer 2 after the cut-off: only a cancellation -> did not buy again
    "C536370,22139,\"TEA, SET\",-1,2011-10-01T09:00:00,5.0,2,France",
    # no customer: left out
    "536371,22139,,56,2011-01-01T11:52:00,0.0,,United Kingdom",
    # customer 3: only after the cut-off -> no history, no label row for bought_after
    "536372,71053,LANTERN,1,2011-11-01T08:00:00,3.39,3,Germany",
]


def _rows():
    import csv
    import io

    return list(csv.DictReader(io.StringIO(HEADER + "\n".join(LINES) + "\n")))


def test_country_labels_use_every_line_and_the_most_frequent_country():
    events, labels, counts = online_retail.build_tables(_rows(), "country_non_uk")
    assert labels == [("1", 0, ""), ("2", 1, ""), ("3", 1, "")]
    assert counts["no_customer"] == 1 and counts["events"] == 7
    assert ("1", "2011-01-01T08:26:00", "85123A", "WHITE HEART", "6", "2.55",
            "purchase") in events
    assert [e[6] for e in events if e[0] == "2"] == ["purchase", "cancel", "cancel"]
    assert all(len(e) == len(online_retail.EVENT_COLUMNS) for e in events)


def test_bought_after_keeps_history_before_the_cutoff_and_ignores_cancellations():
    events, labels, counts = online_retail.build_tables(_rows(), "bought_after")
    assert labels == [("1", "", 1), ("2", "", 0)]
    assert all(e[1] < online_retail.CUTOFF for e in events)
    assert counts["after_cutoff"] == 3 and counts["events"] == 4 and counts["positives"] == 1
    with pytest.raises(ValueError, match="task"):
        online_retail.build_tables(_rows(), "churn")


def test_online_retail_command_reads_gzip(tmp_path):
    source = tmp_path / "retail.csv.gz"
    with gzip.open(source, "wt", encoding="utf-8", newline="") as f:
        f.write(HEADER + "\n".join(LINES) + "\n")
    assert online_retail.main(["--input", str(source), "--task", "bought_after",
                               "--output_dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "labels.csv").read_text().splitlines() == [
        "customer_id,country_non_uk,bought_after", "1,,1", "2,,0"]
    assert online_retail.main(["--input", str(tmp_path / "missing.gz"), "--task",
                               "bought_after", "--output_dir", str(tmp_path)]) == 2


CDNOW = """ customer_id  date number_of_cds  dollar_value\r
 00001 19970101  1   11.77\r
 00002 19970112  1   12.00\r
 00002 19971001  2   20.00\r
 00003 19970930  5   77.00\r
 00004 19980101  1   10.00\r
"""


def test_cdnow_cutoff_and_label():
    events, labels, counts = cdnow.build_tables(CDNOW.splitlines(keepends=True))
    assert labels == [("00001", 0), ("00002", 1), ("00003", 0)]  # 00004 has no history
    assert events == [("00001", "19970101", "1", "11.77"), ("00002", "19970112", "1", "12.00"),
                      ("00003", "19970930", "5", "77.00")]
    assert counts["after_cutoff"] == 2
    with pytest.raises(ValueError, match="line 3"):
        cdnow.build_tables(["h\n", "00001 19970101 1 1.0\n", "00001 19970101\n"])
