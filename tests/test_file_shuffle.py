"""The file shuffle's spill files: Arrow streams that round-trip the values, never pickle."""

import glob
import math
import pickle

import numpy as np
import pyarrow as pa
import pytest

from autorisk_tf.data.schema import parse_schema
from beam import file_shuffle, preprocess
from tests.conftest import SCHEMA


def test_spill_groups_each_key_sorted_by_time_then_input_order(tmp_path):
    schema = parse_schema(SCHEMA)  # fields: event_type, amount, item
    spill = file_shuffle.Spill(str(tmp_path), partitions=2)
    events = preprocess.events_spill_schema(schema)
    first = file_shuffle.SpillWriter(spill, file_shuffle.EVENTS, "f00000", events)
    first.write(["u1", "u2", "u1"], [[300, 5, 100], [1, 2, 3],
                                     ["pay", "logon", ""], [float("nan"), 1.0, 12.5],
                                     ["滴滴 ride", "", "bus"]])
    second = file_shuffle.SpillWriter(spill, file_shuffle.EVENTS, "f00001", events)
    second.write(["u1"], [[100], [2 << 40 | 1], ["refund"], [3.0], [""]])  # a tie at 100
    labels = file_shuffle.SpillWriter(spill, file_shuffle.LABELS, "l00000",
                                      preprocess.labels_spill_schema(schema))
    labels.write(["u1", "u9"], [["labels.csv", "labels.csv"], [2, 3], [1.0, 0.0],
                                ["young", ""]])
    for writer in (first, second, labels):
        writer.close()
    grouped = {}
    for partition in range(2):
        grouped.update(file_shuffle.read_partition(spill, partition))
    assert sorted(grouped) == ["u1", "u2", "u9"]
    (timestamps, orders, (kinds, amounts, items)), = grouped["u1"][file_shuffle.EVENTS]
    np.testing.assert_array_equal(timestamps, [100, 100, 300])
    np.testing.assert_array_equal(orders, [3, 2 << 40 | 1, 1])
    assert kinds == ["", "refund", "pay"] and items == ["bus", "", "滴滴 ride"]
    np.testing.assert_array_equal(amounts[:2], [12.5, 3.0])
    assert math.isnan(amounts[2]) and amounts.dtype == np.float64
    assert grouped["u1"][file_shuffle.LABELS] == [("labels.csv", 2,
                                                   {"is_risk": 1.0, "band": "young"})]
    assert grouped["u9"] == {file_shuffle.EVENTS: [], file_shuffle.LABELS: [
        ("labels.csv", 3, {"is_risk": 0.0, "band": ""})]}
    for path in glob.glob(f"{tmp_path}/*"):
        assert path.endswith(".arrows")
        with open(path, "rb") as f:
            assert pa.ipc.open_stream(f).read_all().num_rows > 0


def test_sorted_history_merges_batches_in_time_then_input_order():
    schema = parse_schema(SCHEMA)
    batches = [([300, 100], [1, 3], [["pay", "a"], [1.0, 2.0], ["x", "y"]]),
               ([100, 50], [2, 9], [["b", "c"], [float("nan"), 4.0], ["", "z"]])]
    timestamps, (kinds, amounts, items) = preprocess.sorted_history(batches, schema)
    np.testing.assert_array_equal(timestamps, [50, 100, 100, 300])
    assert kinds == ["c", "b", "a", "pay"] and items == ["z", "", "y", "x"]
    np.testing.assert_array_equal(amounts, [4.0, np.nan, 2.0, 1.0])


def test_a_pickle_in_the_spill_folder_is_not_loaded(tmp_path):
    spill = file_shuffle.Spill(str(tmp_path), partitions=1)

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    with open(tmp_path / "events-p00000-evil.arrows", "wb") as f:
        f.write(pickle.dumps(("u1", Payload())))
    with pytest.raises(pa.ArrowInvalid):  # not an Arrow stream: an error, and nothing runs
        list(file_shuffle.read_partition(spill, 0))
