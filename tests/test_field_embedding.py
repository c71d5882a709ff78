import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from autorisk_tf.layers import FieldEmbedding
from tests.encoder_inputs import FEATURES, MAX_TOKENS, NO_TEXT, alone_and_padded, random_ids
from tests.layer_testing import run_layer_test

D, E = 16, 8


@pytest.mark.parametrize("merge", ["add", "concat"])
@pytest.mark.parametrize("text_summary", ["conv", "mean"])
def test_layer_contract_and_parameter_count(merge, text_summary):
    ids = random_ids(FEATURES, [7, 3], 7)
    out_dim = D if merge == "add" else 4
    tables = (12 + 9 + 28) * out_dim + 30 * E
    conv = (3 * E * E + E) if text_summary == "conv" else 0
    projection = E * out_dim + out_dim + (4 * out_dim * D + D if merge == "concat" else 0)
    out = run_layer_test(
        lambda **kw: FieldEmbedding(FEATURES, D, merge=merge, field_dim=4, text_dim=E,
                                    text_summary=text_summary, **kw),
        ids, (2, 7, D), num_params=tables + conv + projection)
    assert np.all(out[1, 3:] == 0.0) and np.abs(out[1, :3]).min() > 0


def test_add_merge_is_the_sum_of_the_tables():
    layer = FieldEmbedding(NO_TEXT, D)
    ids = random_ids(NO_TEXT, [5], 5)
    got = ops.convert_to_numpy(layer(ids))[0]
    want = sum(ops.convert_to_numpy(layer._tables[s["name"]].embeddings)[ids[s["name"]][0]]
               for s in NO_TEXT)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("text_summary", ["conv", "mean"])
def test_text_summary_ignores_token_padding(text_summary):
    keras.utils.set_random_seed(0)
    spec = [{"name": "item", "kind": "text", "vocab_size": 30}]
    layer = FieldEmbedding(spec, D, text_dim=E, text_summary=text_summary)
    short = random_ids(spec, [4], 4)
    longer = {"item": np.concatenate([short["item"], np.zeros((1, 4, 5), "int32")], -1)}
    np.testing.assert_allclose(ops.convert_to_numpy(layer(short)),
                               ops.convert_to_numpy(layer(longer)), atol=1e-6)
    changed = {"item": short["item"].copy()}
    changed["item"][0, 2, 0] = 29 if changed["item"][0, 2, 0] != 29 else 28
    diff = ops.convert_to_numpy(layer(changed)) - ops.convert_to_numpy(layer(short))
    assert np.abs(diff[0, 2]).max() > 1e-4 and np.all(diff[0, [0, 1, 3]] == 0)


@pytest.mark.parametrize("features", [FEATURES, NO_TEXT], ids=["text", "no_text"])
def test_padding_invariance(features):
    keras.utils.set_random_seed(1)
    layer = FieldEmbedding(features, D, text_dim=E)
    alone, batch = alone_and_padded(features, 9)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(alone))[0],
                               ops.convert_to_numpy(layer(batch))[1, :9], atol=1e-6)


def test_mask_without_the_preprocessor_mask():
    layer = FieldEmbedding(FEATURES, D, text_dim=E)
    ids = random_ids(FEATURES, [6, 2], 6)
    mask = ops.convert_to_numpy(layer.compute_padding_mask(
        {k: v for k, v in ids.items() if k != "padding_mask"}))
    np.testing.assert_array_equal(mask, ids["padding_mask"])
    assert MAX_TOKENS == ids["item"].shape[-1]


def test_small_tables_read_by_one_hot_large_by_gather_same_values():
    # 12 rows: one-hot matmul with a dense gradient; 300 rows: gather, sparse gradient.
    specs = [{"name": "small", "kind": "categorical", "vocab_size": 12},
             {"name": "large", "kind": "categorical", "vocab_size": 300}]
    layer = FieldEmbedding(specs, D)
    ids = random_ids(specs, [6, 4], 6)
    with tf.GradientTape() as tape:
        out = layer(ids)
        loss = ops.sum(out * ops.arange(D, dtype="float32"))
    want = sum(ops.convert_to_numpy(layer._tables[s["name"]](ids[s["name"]])) for s in specs)
    np.testing.assert_allclose(ops.convert_to_numpy(out), want * ids["padding_mask"][..., None],
                               atol=1e-6)
    small, large = tape.gradient(loss, [layer._tables["small"].embeddings.value,
                                        layer._tables["large"].embeddings.value])
    assert not isinstance(small, tf.IndexedSlices) and isinstance(large, tf.IndexedSlices)
    np.testing.assert_allclose(ops.convert_to_numpy(small).sum(),
                               D * (D - 1) / 2 * ids["padding_mask"].sum(), rtol=1e-5)


@pytest.mark.parametrize("text_summary", ["conv", "mean"])
def test_repeated_texts_are_summarised_once_with_the_same_values_and_gradients(text_summary):
    keras.utils.set_random_seed(2)
    spec = [{"name": "item", "kind": "text", "vocab_size": 30}]
    layer = FieldEmbedding(spec, D, text_dim=E, text_summary=text_summary)
    rows = random_ids(spec, [3], 3)["item"][0]  # three distinct token rows
    # 2 x 5 events: the three rows repeated in another order, and two padded events
    order = [[0, 1, 0, 2, 1], [2, 2, 0, -1, -1]]
    ids = np.stack([[rows[i] if i >= 0 else np.zeros_like(rows[0]) for i in row]
                    for row in order])
    weights = tf.random.normal((2, 5, D), seed=3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer({"item": ids}) * weights)
    grads = tape.gradient(loss, layer.trainable_variables)
    # The reference: every event through the layer on its own (nothing to share).
    reference = np.zeros((2, 5, D), "float32")
    want = [np.zeros(v.shape, "float32") for v in layer.trainable_variables]
    for b in range(2):
        for t in range(5):
            with tf.GradientTape() as tape:
                alone = layer({"item": ids[b:b + 1, t:t + 1]})[0, 0]
                part = tf.reduce_sum(alone * weights[b, t])
            reference[b, t] = alone.numpy()
            for total, g in zip(want, tape.gradient(part, layer.trainable_variables),
                                strict=True):
                total += 0 if g is None else tf.convert_to_tensor(g).numpy()
    np.testing.assert_allclose(layer({"item": ids}).numpy(), reference, atol=1e-6)
    compiled = tf.function(lambda x: layer({"item": x}), jit_compile=True)  # XLA has Unique
    np.testing.assert_allclose(compiled(ids).numpy(), reference, atol=1e-6)
    assert np.all(reference[1, 3:] == 0)
    for got, expected in zip(grads, want, strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(), expected, atol=1e-5)
