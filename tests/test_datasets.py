import gzip

import pytest

from autorisk_tf.datasets import cdnow, online_retail, physionet2012

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


STAY_1 = """Time,Parameter,Value
00:00,RecordID,132539
00:00,Age,54
00:00,Gender,0
00:00,Height,-1
00:00,Weight,-1
00:07,HR,73
25:30,HR,77
47:59,Weight,80.5
"""
STAY_2 = """Time,Parameter,Value
00:00,RecordID,132540
00:00,Age,76
01:00,Temp,-1
"""
OUTCOMES = """RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death
132539,6,1,5,-1,0
132540,16,8,14,3,1
132541,-1,-1,-1,-1,0
"""


def test_physionet_stays_drop_unmeasured_descriptors_and_count_minutes_from_admission():
    events, labels, counts = physionet2012.build_tables(
        [("132539.txt", STAY_1.splitlines()), ("132540.txt", STAY_2.splitlines())],
        OUTCOMES.splitlines())
    assert events == [
        ("132539", "2012-01-01T00:00:00", "Age", "54"),
        ("132539", "2012-01-01T00:00:00", "Gender", "0"),
        ("132539", "2012-01-01T00:07:00", "HR", "73"),
        ("132539", "2012-01-02T01:30:00", "HR", "77"),
        ("132539", "2012-01-02T23:59:00", "Weight", "80.5"),
        ("132540", "2012-01-01T00:00:00", "Age", "76"),
        ("132540", "2012-01-01T01:00:00", "Temp", "-1"),  # -1 is a value, not a descriptor
    ]
    # death; long_stay from 14 days; stay 132541 has no events, so no label row
    assert labels == [("132539", 0, 0), ("132540", 1, 1)]
    assert counts["descriptor_not_measured"] == 2 and counts["observations"] == 7
    assert counts["stays"] == 2 and counts["deaths"] == 1 and counts["long_stays"] == 1
    assert physionet2012.outcome_labels(OUTCOMES.splitlines())["132541"] == (0, "")
    with pytest.raises(ValueError, match="is not HH:MM"):
        physionet2012.stay_events(["Time,Parameter,Value", "00:00,RecordID,1", "7:75,HR,1"])
    with pytest.raises(ValueError, match="no RecordID"):
        physionet2012.stay_events(["Time,Parameter,Value", "00:00,HR,1"], "x.txt")


def physionet_files(root):
    """Writes a tiny set-a.tar.gz and Outcomes-a.txt under `root` (a data root's folder)."""
    import io
    import tarfile

    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "set-a.tar.gz", "w:gz") as archive:
        for name, text in (("132539.txt", STAY_1), ("132540.txt", STAY_2)):
            data = text.encode()
            info = tarfile.TarInfo(f"set-a/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (root / "Outcomes-a.txt").write_text(OUTCOMES)


def test_physionet_command_reads_the_tarball(tmp_path):
    physionet_files(tmp_path / "physionet2012")
    out = tmp_path / "out"
    assert physionet2012.main(["--input", str(tmp_path / "physionet2012" / "set-a.tar.gz"),
                               "--outcomes", str(tmp_path / "physionet2012" / "Outcomes-a.txt"),
                               "--output_dir", str(out)]) == 0
    assert (out / "labels.csv").read_text().splitlines() == [
        "record_id,death,long_stay", "132539,0,0", "132540,1,1"]
    lines = (out / "events.csv").read_text().splitlines()
    assert lines[0] == "record_id,timestamp,parameter,value" and len(lines) == 8
    assert physionet2012.main(["--input", str(tmp_path / "none.tar.gz"), "--outcomes",
                               str(out / "labels.csv"), "--output_dir", str(out)]) == 2
