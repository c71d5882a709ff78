import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from autorisk_tf.layers.id_bag import IdBag
from tests.layer_testing import run_layer_test

FEATURES = [{"name": "item", "kind": "categorical", "vocab_size": 40},
            {"name": "tags", "kind": "categorical", "vocab_size": 7, "multi": True},
            {"name": "amount", "kind": "numeric", "vocab_size": 10}]
IDS = {"item": np.array([[4, 9, 4, 1, 0, 0], [2, 3, 0, 0, 0, 0]], "int32"),
       "tags": np.array([[[4, 5], [5, 0], [6, 6], [0, 0], [0, 0], [0, 0]],
                         [[0, 0]] * 6], "int32"),
       "amount": np.array([[5, 6, 7, 8, 0, 0], [5, 0, 0, 0, 0, 0]], "int32")}


def _expected(table, held):
    return table[held].sum(0) / np.sqrt(len(held)) if held else np.zeros(table.shape[1])


def test_distinct_ids_once_reserved_ids_never_and_tables_capped_by_vocabulary():
    bag = IdBag(FEATURES, dim=8)
    out = ops.convert_to_numpy(bag(IDS))
    assert bag.output_dim == 8 + 3 and out.shape == (2, 11)  # tags: 3 ids, 3 wide
    item, tags = (ops.convert_to_numpy(w) for w in bag.weights)
    np.testing.assert_allclose(out[0, :8], _expected(item, [4, 9]), atol=1e-6)
    np.testing.assert_allclose(out[0, 8:], _expected(tags, [4, 5, 6]), atol=1e-6)
    np.testing.assert_array_equal(out[1], np.zeros(11))  # only reserved ids


def test_padding_and_order_change_nothing():
    bag = IdBag(FEATURES[:1], dim=8)
    ids = np.array([[4, 9, 4, 12, 7]], "int32")
    shuffled = np.array([[12, 7, 0, 9, 4, 4, 0, 0]], "int32")
    np.testing.assert_allclose(ops.convert_to_numpy(bag({"item": ids})),
                               ops.convert_to_numpy(bag({"item": shuffled})), atol=1e-6)


def test_layer_contract_and_xla():
    out = run_layer_test(lambda **kw: IdBag(FEATURES, dim=8, **kw), IDS, (2, 11),
                         num_trainable_weights=2, num_params=40 * 8 + 7 * 3)
    keras.utils.set_random_seed(0)
    bag = IdBag(FEATURES, dim=8)
    compiled = tf.function(bag, jit_compile=True)
    np.testing.assert_allclose(compiled(IDS).numpy(), ops.convert_to_numpy(bag(IDS)),
                               atol=1e-6)
    assert out.shape == (2, 11)


def test_a_schema_without_categorical_fields_gets_width_zero():
    bag = IdBag(FEATURES[2:])
    assert bag.output_dim == 0
    assert tuple(ops.shape(bag({"amount": IDS["amount"]}))) == (2, 0)


def test_idf_weighting_divides_by_the_weights_norm_and_survives_saving(tmp_path):
    bag = IdBag(FEATURES[:1], dim=8, weighting="idf")
    ids = {"item": np.array([[4, 9, 4, 0]], "int32")}
    first = ops.convert_to_numpy(bag(ids))[0]
    (table,) = [ops.convert_to_numpy(w) for w in bag.trainable_weights]
    np.testing.assert_allclose(first, _expected(table, [4, 9]), atol=1e-6)  # ones until set
    df = np.zeros(40, np.int64)
    df[4], df[9] = 99, 9  # of 99 sequences: id 4 in all, id 9 in a tenth
    bag.set_document_frequencies({"item": df}, 99)
    idf = np.log(100 / (1 + df)) + 1
    np.testing.assert_allclose(ops.convert_to_numpy(bag.id_weights()["item"])[[4, 9]],
                               idf[[4, 9]], rtol=1e-6)
    want = (idf[4] * table[4] + idf[9] * table[9]) / np.sqrt(idf[4] ** 2 + idf[9] ** 2)
    np.testing.assert_allclose(ops.convert_to_numpy(bag(ids))[0], want, atol=1e-6)
    inputs = keras.Input((None,), dtype="int32", name="item")
    model = keras.Model(inputs, bag({"item": inputs}))
    model.save(tmp_path / "bag.keras")
    loaded = keras.models.load_model(tmp_path / "bag.keras")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(ids["item"]))[0], want, atol=1e-6)
    assert np.all(ops.convert_to_numpy(IdBag(FEATURES[:1]).id_weights()["item"]) == 1)
    with pytest.raises(ValueError, match="ids weighting must be one of"):
        IdBag(FEATURES, weighting="tf")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_idf_weighting_under_a_mixed_precision_policy(policy):
    df = np.zeros(40, np.int64)
    df[4], df[9] = 99, 9
    outputs = []
    for dtype in ("float32", policy):
        keras.utils.set_random_seed(0)
        bag = IdBag(FEATURES[:1], dim=8, weighting="idf", dtype=dtype)
        bag({"item": IDS["item"]})  # built by its first call, as in the encoder
        bag.set_document_frequencies({"item": df}, 99)
        outputs.append(bag({"item": IDS["item"]}))
    assert outputs[1].dtype == policy.removeprefix("mixed_")
    np.testing.assert_allclose(ops.convert_to_numpy(ops.cast(outputs[1], "float32")),
                               ops.convert_to_numpy(outputs[0]), rtol=0.02, atol=2e-4)
    assert np.abs(ops.convert_to_numpy(outputs[0])).max() > 0.01
