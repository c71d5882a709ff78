import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.data import artifacts as art
from autorisk_tf.data import reader
from autorisk_tf.data.schema import parse_schema
from autorisk_tf.layers import EventPreprocessor, feature_specs_from_artifacts
from tests.conftest import SCHEMA

NAN = float("nan")


def _small_artifacts():
    return art.Artifacts(parse_schema(SCHEMA), {"event_type": [["pay", 3], ["logon", 2]]},
                         {"item": [["B", 2], ["滴", 1]]}, {"amount": [1.0, 10.0]})


def _raw_batch():
    return {
        "length": tf.constant([3, 1], tf.int64),
        "time/timestamp_ms": tf.zeros((2, 3), tf.int64),
        "time/delta_seconds": tf.constant([[NAN, 0.0, 3.0], [NAN, 7.0, 0.0]]),
        "time/hour": tf.constant([[0, 5, 23], [1, 9, 9]], tf.int64),
        "time/day_of_week": tf.constant([[0, 6, 3], [1, 9, 9]], tf.int64),
        "event/event_type": tf.constant([["pay", "", "zzz"], ["logon", "pay", "pay"]]),
        "event/amount": tf.constant([[0.5, NAN, 10.0], [1.0, 5.0, 5.0]]),
        "event/item": tf.constant([["滴B x", "", "BBBBBBBBBBBB"], ["x", "B", "B"]]),
    }


def test_ids_follow_the_reserved_layout():
    ids = {k: v.numpy().tolist() for k, v in
           EventPreprocessor.from_artifacts(_small_artifacts())(_raw_batch()).items()}
    # 0 pad, 1 missing, 2 OOV, 3 mask, then the vocabulary / buckets; padding past `length`.
    assert ids["event_type"] == [[4, 1, 2], [5, 0, 0]]
    assert ids["amount"] == [[4, 1, 6], [5, 0, 0]]  # x < 1 | 1 <= x < 10 | x >= 10
    assert ids["item"][0] == [[5, 4, 2, 2, 0, 0, 0, 0], [1] + [0] * 7, [4] * 8]
    assert ids["item"][1] == [[2] + [0] * 7, [0] * 8, [0] * 8]
    assert ids["time_delta"] == [[1, 4, 6], [1, 0, 0]]  # floor(log2(1 + s)) + 4
    assert ids["time_hour"] == [[4, 9, 27], [5, 0, 0]]
    assert ids["time_day_of_week"] == [[4, 10, 7], [5, 0, 0]]
    assert ids["padding_mask"] == [[True, True, True], [True, False, False]]


def test_delta_buckets_are_exact_at_powers_of_two():
    specs = [{"name": "time_delta", "kind": "time", "buckets": 24, "vocab_size": 28}]
    seconds = np.array([[0, 0.99, 1, 2.99, 3, 1023, 1e12]], "float32")
    ids = EventPreprocessor(specs)({"length": tf.constant([7]),
                                    "time/timestamp_ms": tf.zeros((1, 7), tf.int64),
                                    "time/delta_seconds": seconds})["time_delta"]
    assert ids.numpy().tolist() == [[4, 4, 5, 5, 6, 14, 27]]  # 1e12 s: the last bucket


def test_age_buckets_measure_hours_before_the_reference_time():
    hour = 3_600_000
    reference = 1_000_000 * hour
    specs = [{"name": "time_age", "kind": "time", "buckets": 32, "vocab_size": 36,
              "reference_ms": reference}]
    ages_h = np.array([0, 0.5, 1, 3, 47, 24 * 365, 10 ** 9])
    timestamps = (reference - ages_h * hour).astype(np.int64)[None, :]
    timestamps = np.concatenate([timestamps, [[reference + hour]]], axis=1)
    ids = EventPreprocessor(specs)({"length": tf.constant([8]),
                                    "time/timestamp_ms": tf.constant(timestamps)})["time_age"]
    want = [min(math.floor(2 * math.log2(1 + h)), 31) + 4 for h in ages_h] + [4]  # later: 0
    assert ids.numpy().tolist() == [want]
    assert want[:4] == [4, 5, 6, 8] and want[-2] == 35


def test_age_feature_needs_a_reference_time_in_the_artifacts():
    schema = parse_schema(SCHEMA.replace("labels:", "time_features: {age_buckets: 8}\nlabels:"))
    artifacts = art.Artifacts(schema, {"event_type": []}, {"item": []}, {"amount": []})
    with pytest.raises(ValueError, match="reference time"):
        feature_specs_from_artifacts(artifacts)
    artifacts.stats["reference_time_ms"] = 123
    (spec,) = [s for s in feature_specs_from_artifacts(artifacts) if s["name"] == "time_age"]
    assert spec["reference_ms"] == 123 and spec["vocab_size"] == 12


def test_config_serialisation_and_tf_data_give_the_same_ids():
    layer = EventPreprocessor.from_artifacts(_small_artifacts())
    want = {k: v.numpy() for k, v in layer(_raw_batch()).items()}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config()
    in_data = next(iter(tf.data.Dataset.from_tensors(_raw_batch()).map(clone)))
    for name, value in want.items():
        np.testing.assert_array_equal(in_data[name].numpy(), value)


def reference_ids(example, artifacts):
    """The ids computed in plain Python from the artifacts (the preprocessing semantics)."""
    out = {}
    for spec in feature_specs_from_artifacts(artifacts):
        name, kind = spec["name"], spec["kind"]
        if kind == "categorical" and spec.get("multi"):
            index = {v: i + art.NUM_RESERVED_IDS for i, v in enumerate(spec["vocabulary"])}
            width = spec["max_values"]
            rows = []
            for cell in example[f"event/{name}"]:
                values = art.split_values(cell, spec["separator"])[:width]
                row = [index.get(v, art.OOV_ID) for v in values] or [art.MISSING_ID]
                rows.append(row + [art.PAD_ID] * (width - len(row)))
            out[name] = rows
        elif kind == "categorical":
            index = {v: i + art.NUM_RESERVED_IDS for i, v in enumerate(spec["vocabulary"])}
            out[name] = [art.MISSING_ID if v == "" else index.get(v, art.OOV_ID)
                         for v in example[f"event/{name}"]]
        elif kind == "numeric":
            # Values are stored as float32, so boundaries compare in float32 too.
            own = dict(zip(spec.get("categories", []), spec.get("category_boundaries", []),
                           strict=True))
            categories = example[f"event/{spec['bucket_by']}"] if own else \
                [""] * len(example[f"event/{name}"])
            out[name] = [art.MISSING_ID if math.isnan(x) else art.NUM_RESERVED_IDS + int(
                np.searchsorted(np.asarray(own.get(c, spec["boundaries"]), np.float32),
                                np.float32(x), side="right"))
                for x, c in zip(example[f"event/{name}"], categories, strict=True)]
        elif kind == "text":
            index = {v: i + art.NUM_RESERVED_IDS for i, v in enumerate(spec["vocabulary"])}
            rows = []
            for text in example[f"event/{name}"]:
                tokens = art.tokenize(text, spec["tokenizer"])[: spec["max_tokens"]]
                row = [index.get(t, art.OOV_ID) for t in tokens] or [art.MISSING_ID]
                rows.append(row + [art.PAD_ID] * (spec["max_tokens"] - len(row)))
            out[name] = rows
        elif name == "time_delta":
            out[name] = [art.MISSING_ID if math.isnan(s) else art.NUM_RESERVED_IDS + min(
                int(1 + s).bit_length() - 1, spec["buckets"] - 1)
                for s in example["time/delta_seconds"]]
        else:
            source = "time/hour" if name == "time_hour" else "time/day_of_week"
            out[name] = [art.NUM_RESERVED_IDS + int(v) for v in example[source]]
    return out


def test_matches_the_python_reference_on_simulated_users(simulated):
    """No train/serve skew: the TF layer equals the Python semantics of the artifacts."""
    artifacts = simulated.artifacts
    layer = EventPreprocessor.from_artifacts(artifacts)
    pattern = f"{simulated.output_dir}/train/*.tfrecord"
    examples = list(reader.read_sequences(pattern, artifacts.schema))
    batches = reader.make_dataset(pattern, artifacts.schema, batch_size=16)
    got = [layer(batch) for batch in batches]
    checked = 0
    for i, example in enumerate(examples):
        ids = {k: v[i % 16].numpy() for k, v in got[i // 16].items()}
        n = int(example["length"])
        assert ids["padding_mask"].sum() == n
        for name, want in reference_ids(example, artifacts).items():
            np.testing.assert_array_equal(ids[name][:n], np.array(want), err_msg=name)
            assert np.all(ids[name][n:] == 0)
            checked += n
    assert checked > 10_000
    mixed = [t for ex in examples for t in ex["event/item"] if any(ord(c) > 127 for c in t)]
    assert mixed, "the simulated texts should include non-ASCII characters"


@pytest.mark.parametrize("tokenizer", ["char", "whitespace"])
def test_tokenizers_match_artifacts_tokenize(tokenizer):
    texts = ["滴滴 ride  to\tairport", "", " a  b ", "Game币×100", "é\u00a0x"]
    vocab = sorted({t for text in texts for t in art.tokenize(text, tokenizer)})
    spec = {"name": "t", "kind": "text", "vocabulary": vocab, "tokenizer": tokenizer,
            "max_tokens": 32, "vocab_size": art.NUM_RESERVED_IDS + len(vocab)}
    ids = EventPreprocessor([spec])({"length": tf.constant([len(texts)]),
                                     "time/timestamp_ms": tf.zeros((1, len(texts)), tf.int64),
                                     "event/t": tf.constant([texts])})["t"].numpy()[0]
    for text, row in zip(texts, ids, strict=True):
        tokens = art.tokenize(text, tokenizer)
        want = [vocab.index(t) + art.NUM_RESERVED_IDS for t in tokens] or [art.MISSING_ID]
        assert row[: len(want)].tolist() == want, text
        assert np.all(row[len(want):] == 0)
