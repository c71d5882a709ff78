"""Vocabulary counting as Beam combines: per-value sums, top values per table."""

import json
from collections import Counter

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter

from autorisk_tf.data import artifacts
from beam import analysis


def _top(elements, n, folder):
    """Runs `TopValues(n)` on `((table, value), count)` elements: (result, metrics)."""
    path = folder / "top.json"
    pipeline = beam.Pipeline()
    _ = (pipeline | beam.Create(elements) | analysis.TopValues(n)
         | beam.Map(lambda top: path.write_text(json.dumps(top), encoding="utf-8")))
    result = pipeline.run()
    result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace("analysis"))
    top = json.loads(path.read_text(encoding="utf-8"))
    return {table: [tuple(pair) for pair in pairs] for table, pairs in top.items()}, metrics


def test_counts_ties_and_the_missing_value_match_build_vocabulary(tmp_path):
    rng = np.random.default_rng(0)
    values = ["a", "ab", "b", "B", "é", "滴", "a b", "", "zz", "z"]
    elements, want = [], Counter()
    for _ in range(400):  # the same value counted in many chunks, as parsing emits them
        value = values[int(rng.integers(len(values)))]
        count = int(rng.integers(1, 4))
        elements.append((("vocab/f", value), count))
        want[value] += count
    elements += [(("tokens/t", "x"), 2), (("tokens/t", "y"), 2), (("tokens/t", "xy"), 2)]
    top, _ = _top(elements, 6, tmp_path)
    assert top["vocab/f"] == artifacts.build_vocabulary(want, 6, 1)
    assert "" not in dict(top["vocab/f"])
    # equal counts: the smaller value first, a prefix before its extensions
    assert top["tokens/t"] == [("x", 2), ("xy", 2), ("y", 2)]


def test_no_single_accumulator_holds_200k_distinct_values(tmp_path):
    distinct = 200_000
    elements = [(("vocab/merchant", f"m{i:06d}"), 1 + (i % 7 == 0)) for i in range(distinct)]
    elements += [(("vocab/merchant", "m000001"), 5)]  # counted again in another chunk
    top, metrics = _top(elements, 100, tmp_path)
    counters = {m.key.metric.name: m.committed for m in metrics["counters"]}
    sizes = {m.key.metric.name: m.committed for m in metrics["distributions"]}
    # One accumulator per value (CombinePerKey), then at most n values per table (Top).
    assert counters["value_accumulators"] == distinct
    assert sizes["values_per_table_after_top"].max == 100
    counts = Counter({f"m{i:06d}": 1 + (i % 7 == 0) for i in range(distinct)})
    counts["m000001"] += 5
    assert top["vocab/merchant"] == artifacts.build_vocabulary(counts, 100, 1)
    assert top["vocab/merchant"][0] == ("m000001", 6)
