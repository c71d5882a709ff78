from autorisk_tf.data import artifacts


def test_build_vocabulary_orders_by_count_then_value():
    counts = {"b": 5, "a": 5, "c": 2, "d": 1, "": 9}
    assert artifacts.build_vocabulary(counts, max_vocab=3, min_count=1) == [
        ("a", 5), ("b", 5), ("c", 2)]
    assert artifacts.build_vocabulary(counts, max_vocab=10, min_count=2) == [
        ("a", 5), ("b", 5), ("c", 2)]


def test_quantile_boundaries():
    values = [float(v) for v in range(1, 101)] + [float("nan")]
    assert artifacts.quantile_boundaries(values, 4, log=False) == [25.75, 50.5, 75.25]
    assert artifacts.quantile_boundaries([1.0] * 10 + [2.0] * 10, 4, log=False) == [1.0, 1.5, 2.0]
    assert artifacts.quantile_boundaries([], 4, log=False) == []
    logged = artifacts.quantile_boundaries([1.0, 10.0, 100.0, 1000.0, 10000.0], 2, log=True)
    assert logged == [100.0]  # the median, recovered exactly in raw units


def test_tokenize():
    assert artifacts.tokenize("滴滴 ab", "char") == ["滴", "滴", " ", "a", "b"]
    assert artifacts.tokenize("  Bus  ticket\t南站 ", "whitespace") == ["Bus", "ticket", "南站"]


def test_preprocessing_options_round_trip_through_a_run_folder(tmp_path):
    import json

    import pytest

    from autorisk_tf.data.artifacts import PreprocessingOptions

    stats = {"options": {"max_len": 512, "window_stride": 128}, "reference_time_ms": 7}
    options = PreprocessingOptions.from_stats(stats)
    assert options == PreprocessingOptions(512, 128, 7)
    options.save(str(tmp_path))
    assert PreprocessingOptions.load(str(tmp_path)) == options
    assert PreprocessingOptions.load(str(tmp_path / "none")) == PreprocessingOptions()
    (tmp_path / "preprocessing.json").write_text(json.dumps({"max_len": 1, "stride": 2}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['stride'\]"):
        PreprocessingOptions.load(str(tmp_path))
