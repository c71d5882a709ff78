"""The file shuffle's spill files: JSON Lines that round-trip the parsed values, never pickle."""

import glob
import json
import math
import pickle

import pytest

from beam import file_shuffle


def test_spill_round_trips_values_as_plain_json(tmp_path):
    spill = file_shuffle.Spill(str(tmp_path), partitions=2)
    writer = file_shuffle.SpillWriter(spill, file_shuffle.EVENTS, "f00000")
    batch = [(1767225600000, 7, ("pay", float("nan"), "滴滴 \ud800 ride")),
             (1767225660000, 8, ("", 12.5, ""))]
    writer.add("u1", batch)
    writer.add("u1", batch[:1])
    labels = file_shuffle.SpillWriter(spill, file_shuffle.LABELS, "l00000")
    labels.add("u1", ("labels.csv", 2, {"is_risk": 1.0, "band": "x"}))
    writer.close()
    labels.close()
    partition = spill.partition("u1")
    grouped = file_shuffle.read_partition(spill, partition)
    events = grouped["u1"][file_shuffle.EVENTS]
    assert len(events) == 2 and events[0][1] == [1767225660000, 8, ["", 12.5, ""]]
    kind, amount, item = events[0][0][2]
    assert kind == "pay" and math.isnan(amount) and item == "滴滴 \ud800 ride"
    assert grouped["u1"][file_shuffle.LABELS] == [["labels.csv", 2, {"is_risk": 1.0,
                                                                     "band": "x"}]]
    for path in glob.glob(f"{tmp_path}/*"):
        assert path.endswith(".jsonl")
        with open(path, "rb") as f:
            for line in f:
                assert line.isascii() and isinstance(json.loads(line), list)


def test_a_pickle_in_the_spill_folder_is_not_loaded(tmp_path):
    spill = file_shuffle.Spill(str(tmp_path), partitions=1)

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    with open(tmp_path / "events-p00000-evil.jsonl", "wb") as f:
        f.write(pickle.dumps(("u1", Payload())))
    with pytest.raises(ValueError):  # not JSON: an error, and nothing runs
        file_shuffle.read_partition(spill, 0)
