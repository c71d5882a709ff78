import os

import keras
import numpy as np
import pytest
from keras import ops

from autorisk_tf.layers import BlockAttention, GatedSeparableConv1D

D = 16


def _alone_vs_padded(layer, length, seed=0):
    """Outputs of one sequence alone and inside a batch padded to 3x its length."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, length, D)).astype("float32")
    alone = layer(x, padding_mask=np.ones((1, length), bool))
    batch = rng.normal(size=(3, 3 * length, D)).astype("float32") * 5  # garbage in padding
    batch[1, :length] = x[0]
    mask = np.zeros((3, 3 * length), bool)
    mask[0, : 2 * length] = True
    mask[1, :length] = True
    mask[2, :] = True
    padded = layer(batch, padding_mask=mask)
    return ops.convert_to_numpy(alone)[0], ops.convert_to_numpy(padded)[1, :length], \
        ops.convert_to_numpy(padded)[1, length:]


@pytest.mark.parametrize("length", [16, 21])  # a multiple of the block size, and not
@pytest.mark.parametrize("make", [
    lambda: GatedSeparableConv1D(kernel_size=5),
    lambda: GatedSeparableConv1D(kernel_size=3, dilation_rate=2, padding="causal"),
    lambda: BlockAttention(num_heads=2, block_size=8, num_global=3),
    lambda: BlockAttention(num_heads=2, block_size=8, causal=True),
])
def test_padding_invariance(make, length):
    keras.utils.set_random_seed(1)
    alone, padded, tail = _alone_vs_padded(make(), length)
    np.testing.assert_allclose(alone, padded, atol=1e-5)
    assert np.all(tail == 0.0)  # padded steps give zeros
    assert np.abs(alone).max() > 1e-3  # not a trivially zero layer


@pytest.mark.parametrize("make", [
    lambda: GatedSeparableConv1D(kernel_size=4, dilation_rate=3, padding="causal"),
    lambda: BlockAttention(num_heads=2, block_size=5, causal=True),
])
def test_causal_future_never_changes_the_past(make):
    keras.utils.set_random_seed(2)
    layer = make()
    x = np.random.default_rng(0).normal(size=(1, 23, D)).astype("float32")
    before = ops.convert_to_numpy(layer(x))
    x[0, 12:] += 3.0
    after = ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(before[0, :12], after[0, :12])
    assert np.abs(before[0, 12:] - after[0, 12:]).max() > 1e-3


def _dense_reference(layer, x, mask):
    """Block attention with global slots computed with an explicit dense mask."""
    w = {v.path.split("/")[-2] + "/" + v.name: ops.convert_to_numpy(v) for v in layer.weights}
    head = layer._head

    def proj(name):
        return np.einsum("nd,dhk->nhk", x, w[f"{name}/kernel"]) + w[f"{name}/bias"]

    def softmax(s):
        s = s - s.max(-1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(-1, keepdims=True)

    q, k, v = proj("query") / np.sqrt(head), proj("key"), proj("value")
    g = w["block_attention/global_query"] / np.sqrt(head)  # [G, H, dh]
    gs = np.einsum("ghd,nhd->hgn", g, k)
    gs = np.where(mask[None, None, :], gs, -1e9)
    gk = np.einsum("hgn,nhd->ghd", softmax(gs), v)  # pooled slot keys == values
    keys = np.concatenate([k, gk], 0)
    values = np.concatenate([v, gk], 0)
    n = x.shape[0]
    blocks = np.arange(n) // layer.block_size
    allowed = np.concatenate([(blocks[:, None] == blocks[None, :]) & mask[None, :],
                              np.ones((n, layer.num_global), bool)], 1)
    scores = np.einsum("qhd,khd->hqk", q, keys)
    out = np.einsum("hqk,khd->qhd", softmax(np.where(allowed[None], scores, -1e9)), values)
    out = np.einsum("qhd,hdo->qo", out, w["output/kernel"]) + w["output/bias"]
    return out * mask[:, None]


def test_block_attention_equals_dense_reference():
    keras.utils.set_random_seed(3)
    layer = BlockAttention(num_heads=2, block_size=4, num_global=2, name="block_attention")
    x = np.random.default_rng(1).normal(size=(11, D)).astype("float32")
    mask = np.arange(11) < 9
    got = ops.convert_to_numpy(layer(x[None], padding_mask=mask[None]))[0]
    np.testing.assert_allclose(got, _dense_reference(layer, x.astype("float64"), mask),
                               atol=1e-5)


def _kernel_weights(layer):
    return sum(int(np.prod(v.shape)) for v in layer.weights if v.name.endswith("kernel"))


def _bias_weights(layer):
    return sum(int(np.prod(v.shape)) for v in layer.weights if v.name.endswith("bias"))


def test_parameter_counts_against_full_conv():
    d = 256
    for k, ratio in ((5, 66_816 / 327_680), (31, 0.036)):
        sep = GatedSeparableConv1D(kernel_size=k, gated=False)
        sep.build((None, None, d))
        full = keras.layers.Conv1D(d, k)
        full.build((None, None, d))
        assert _kernel_weights(full) == k * d * d
        assert _kernel_weights(sep) == k * d + d * d
        assert _kernel_weights(sep) / _kernel_weights(full) == pytest.approx(ratio, abs=5e-4)
        assert _bias_weights(sep) == 2 * d  # depthwise d + pointwise d
    sep = GatedSeparableConv1D(kernel_size=5)
    sep.build((None, None, d))
    assert _kernel_weights(sep) == 1_280 + 2 * 65_536  # the GLU doubles the pointwise part


@pytest.mark.parametrize("make", [
    lambda: GatedSeparableConv1D(kernel_size=3, dilation_rate=2, padding="causal"),
    lambda: BlockAttention(num_heads=2, block_size=4, num_global=2, dropout=0.1),
])
def test_config_round_trip_save_load_and_gradients(make, tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(4)
    layer = make()
    inputs = keras.Input((None, D))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(0).normal(size=(2, 9, D)).astype("float32")
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(model(x)),
                                  ops.convert_to_numpy(loaded(x)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_weights)
    assert len(grads) == len(model.trainable_weights) > 0
    for g, w in zip(grads, model.trainable_weights, strict=True):
        assert g is not None and np.all(np.isfinite(ops.convert_to_numpy(g))), w.path


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_finite_and_close(policy):
    keras.utils.set_random_seed(5)
    x = np.random.default_rng(0).normal(size=(2, 13, D)).astype("float32")
    reference = BlockAttention(num_heads=2, block_size=4, num_global=2)
    want = ops.convert_to_numpy(reference(x))
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(policy)
        layer = BlockAttention(num_heads=2, block_size=4, num_global=2)
        layer.build((None, None, D))
        layer.set_weights(reference.get_weights())
        got = layer(x)
        assert keras.backend.standardize_dtype(got.dtype) == policy.split("_")[1]
        got = ops.convert_to_numpy(ops.cast(got, "float32"))
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=0.1)
