"""Continuous numeric input: scales in the artifacts, values in-graph, embedding and masking."""

import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.data import artifacts as art
from autorisk_tf.data import reader
from autorisk_tf.layers.event_preprocessor import (
    feature_specs_from_artifacts,
    value_input,
)
from autorisk_tf.layers.field_embedding import FieldEmbedding
from autorisk_tf.tasks.masked_event import MaskingConfig, mask_events
from tests.test_bucket_by import TESTS, _lab_csv, reloaded

SCHEMA = """\
key: patient
timestamp: {column: ts, format: epoch_s}
fields:
  - {name: test, kind: categorical}
  - {name: value, kind: numeric, num_buckets: 8, bucket_by: test, min_count: 50,
     continuous: true}
  - {name: logged, column: value, kind: numeric, num_buckets: 8, log: true, continuous: true}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from beam import preprocess as job
    from tests.conftest import Run

    root = tmp_path_factory.mktemp("continuous")
    (root / "labs.csv").write_text(_lab_csv(), encoding="utf-8")
    (root / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    job.run(["--input", str(root / "labs.csv"), "--schema", str(root / "schema.yaml"),
             "--output_dir", str(root / "out"), "--split", "1,0,0"])
    return Run(str(root / "out"), str(root / "schema.yaml"))


def _rows():
    """(test, value) of every row of the lab table with a number."""
    rows = [line.split(",") for line in _lab_csv().splitlines()[1:]]
    return [(test, float(value)) for _, _, test, value in rows if value]


def test_scales_are_the_mean_and_std_per_category_and_after_the_log(lab):
    rows = _rows()
    scales = lab.artifacts.numeric_scales
    for test in TESTS:
        values = np.array([v for t, v in rows if t == test])
        np.testing.assert_allclose(scales["value"]["categories"][test],
                                   [values.mean(), values.std()], rtol=1e-6)
    everything = np.array([v for _, v in rows])
    np.testing.assert_allclose([scales["value"]["mean"], scales["value"]["std"]],
                               [everything.mean(), everything.std()], rtol=1e-6)
    logged = np.log1p(everything)
    np.testing.assert_allclose([scales["logged"]["mean"], scales["logged"]["std"]],
                               [logged.mean(), logged.std()], rtol=1e-6)
    assert scales["logged"]["categories"] == {}


def test_values_are_standardised_in_graph_and_zero_where_missing_or_padded(lab, tmp_path):
    loaded, layer = reloaded(lab, tmp_path)
    assert loaded.numeric_scales == lab.artifacts.numeric_scales
    pattern = f"{lab.output_dir}/train/*.tfrecord"
    batch = next(iter(reader.make_dataset(pattern, loaded.schema, batch_size=64)))
    out = layer(batch)
    scales = loaded.numeric_scales["value"]
    raw, tests = batch["event/value"].numpy(), batch["event/test"].numpy()
    mask = out["padding_mask"].numpy()
    got, logged = out[value_input("value")].numpy(), out[value_input("logged")].numpy()
    checked = 0
    for (b, t), real in np.ndenumerate(mask):
        x, test = raw[b, t], tests[b, t].decode()
        if not real or np.isnan(x):
            assert got[b, t] == 0.0 and logged[b, t] == 0.0
            continue
        mean, std = scales["categories"].get(test, [scales["mean"], scales["std"]])
        assert got[b, t] == pytest.approx(np.clip((x - mean) / std, -5, 5), abs=1e-4)
        g = loaded.numeric_scales["logged"]
        assert logged[b, t] == pytest.approx(
            np.clip((np.log1p(x) - g["mean"]) / g["std"], -5, 5), abs=1e-4)
        checked += 1
    assert checked > 500
    assert (np.abs(got[mask]) <= 5).all() and np.abs(got[mask]).max() > 1.5
    # A missing number: missing id, value 0 (the id tells it from a value at the mean).
    missing = np.isnan(raw) & mask
    assert missing.any() and (out["value"].numpy()[missing] == art.MISSING_ID).all()


def _features():
    return [{"name": "amount", "kind": "numeric", "vocab_size": 8, "continuous": True},
            {"name": "kind", "kind": "categorical", "vocab_size": 6}]


def test_the_embedding_uses_the_value_and_honours_padding():
    layer = FieldEmbedding(_features(), width=8)
    ids = {"amount": tf.constant([[5, 5, 1, 0]]), "kind": tf.constant([[4, 4, 4, 0]]),
           "amount/value": tf.constant([[-1.0, 2.0, 0.0, 0.0]]),
           "padding_mask": tf.constant([[True, True, True, False]])}
    out = layer(ids).numpy()
    assert np.abs(out[0, 0] - out[0, 1]).max() > 1e-3  # same bucket, different values
    np.testing.assert_array_equal(out[0, 3], 0.0)
    clone = FieldEmbedding.from_config(layer.get_config())
    clone.build(None)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(ids).numpy(), out)
    assert clone.get_config()["features"][0]["continuous"] is True
    padded = {k: tf.concat([v, tf.zeros_like(v)], 0) for k, v in ids.items()}
    np.testing.assert_allclose(layer(padded).numpy()[:1], out, atol=1e-6)


def test_masked_events_hide_the_value_too():
    ids = {"amount": tf.fill((4, 50), 6), "kind": tf.fill((4, 50), 5),
           "amount/value": tf.fill((4, 50), 1.5), "padding_mask": tf.ones((4, 50), tf.bool)}
    inputs, targets = mask_events(ids, _features(), MaskingConfig(rate=0.3),
                                  tf.constant([1, 2], tf.int64))
    selected = targets["masked_weights"].numpy() > 0
    assert 20 < selected.sum() < 100
    np.testing.assert_array_equal(inputs["amount/value"].numpy()[selected], 0.0)
    np.testing.assert_array_equal(inputs["amount/value"].numpy()[~selected], 1.5)
    np.testing.assert_array_equal(targets["amount"].numpy(), 6)


def test_feature_specs_carry_scales_only_for_continuous_fields(lab):
    specs = {s["name"]: s for s in feature_specs_from_artifacts(lab.artifacts)}
    assert specs["value"]["continuous"] and len(specs["value"]["category_scales"]) == len(TESTS)
    assert specs["logged"]["log"] is True and "category_scales" not in specs["logged"]
    assert "continuous" not in specs["test"]
