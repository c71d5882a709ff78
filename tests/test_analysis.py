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


def test_no_single_accumulator_holds_all_distinct_values(tmp_path):
    distinct = 10_000
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


def _numbers(batches, log_fields, folder):
    """Runs `NumberSummaries` on `((field, category), values)` batches: the dict it gives."""
    path = folder / "numbers.json"
    pipeline = beam.Pipeline()
    _ = (pipeline | beam.Create(batches) | analysis.NumberSummaries(log_fields)
         | beam.Map(lambda d: path.write_text(json.dumps(
             [[list(key), vars(summary)] for key, summary in d.items()]), encoding="utf-8")))
    pipeline.run().wait_until_finish()
    return {tuple(key): summary for key, summary in json.loads(path.read_text("utf-8"))}


def test_numbers_are_summarised_per_field_and_category(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.lognormal(3.0, 1.0, 3000)
    categories = rng.choice(["hr", "ph", ""], size=values.size).tolist()
    values[::7] = np.nan  # missing: not counted anywhere
    batches = [batch for start in range(0, values.size, 500)  # chunks, as parsing emits them
               for batch in analysis.number_batches("v", values[start:start + 500],
                                                    categories[start:start + 500])]
    batches += list(analysis.number_batches("w", values[:100]))
    numbers = _numbers(batches, {"w"}, tmp_path)
    assert set(numbers) == {("v", ""), ("v", "hr"), ("v", "ph"), ("w", "")}
    finite = np.isfinite(values)
    for key, mask in ((("v", ""), finite),
                      (("v", "hr"), finite & (np.array(categories) == "hr"))):
        want = np.sort(values[mask])
        summary = numbers[key]
        assert summary["count"] == want.size
        np.testing.assert_allclose(summary["quantiles"], want)  # exact below EXACT_VALUES
        np.testing.assert_allclose([summary["mean"], summary["std"]],
                                   [want.mean(), want.std()], rtol=1e-12)
    logged = artifacts.log_transform(values[:100][finite[:100]])
    np.testing.assert_allclose([numbers[("w", "")]["mean"], numbers[("w", "")]["std"]],
                               [logged.mean(), logged.std()], rtol=1e-12)


def test_quantiles_of_200k_values_are_approximate_within_the_rank_error():
    values = np.random.default_rng(2).permutation(200_000).astype(np.float64) ** 1.5
    fn = analysis.QuantileSketch()
    halves = []
    for part in np.array_split(values, 2):  # two workers' accumulators, then merged
        accumulator = fn.create_accumulator()
        for chunk in np.array_split(part, 20):
            accumulator = fn.add_input(accumulator, chunk.tolist())
        halves.append(accumulator)
    merged = fn.merge_accumulators(halves)
    _, state = merged
    held = len(state.unbuffered_elements) + sum(len(b.elements) for b in state.buffers)
    assert held < values.size / 4  # the sketch, not every value
    sketch = fn.extract_output(merged)
    assert len(sketch) == analysis.SKETCH_POINTS
    boundaries = artifacts.quantile_boundaries(sketch, 32, log=False)
    assert len(boundaries) == 31
    ranks = np.searchsorted(np.sort(values), boundaries) / values.size
    np.testing.assert_allclose(ranks, np.arange(1, 32) / 32, atol=2 * analysis.QUANTILE_EPSILON)


def test_exact_values_switch_to_the_sketch_when_merged_past_the_limit():
    fn = analysis.QuantileSketch()
    small = fn.add_input(fn.create_accumulator(), [3.0, 1.0])
    assert fn.extract_output(fn.merge_accumulators([small, small])) == [1.0, 1.0, 3.0, 3.0]
    half = fn.add_input(fn.create_accumulator(),
                        np.arange(analysis.EXACT_VALUES // 2 + 1, dtype=float).tolist())
    merged = fn.merge_accumulators([half, half])
    assert merged[0] == [] and merged[1] is not None
    sketch = fn.extract_output(merged)
    assert len(sketch) == analysis.SKETCH_POINTS
    assert sketch[0] == 0.0 and sketch[-1] == analysis.EXACT_VALUES // 2
