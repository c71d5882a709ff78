import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from autorisk_tf.layers import EncoderBlock
from tests.layer_testing import alone_vs_padded, run_layer_test
from tests.references import encoder_block_reference


@pytest.mark.parametrize("length", [16, 21])
@pytest.mark.parametrize("options", [
    {}, {"ffn_dim": 32}, {"ffn_dim": 32, "ffn_activation": "gelu"}, {"use_conv": False},
    {"use_attention": False}, {"causal": True}])
def test_padding_invariance_and_ablations(options, length):
    keras.utils.set_random_seed(1)
    block = EncoderBlock(kernel_size=5, block_size=8, num_heads=2, num_global=2, **options)
    alone, padded, tail = alone_vs_padded(block, length)
    np.testing.assert_allclose(alone, padded, atol=1e-5)
    assert np.all(tail == 0.0)
    names = {w.path.split("/")[1] for w in block.weights}
    assert ("conv" in names) == options.get("use_conv", True)
    assert ("attention" in names) == options.get("use_attention", True)
    assert ("ffn" in names) == bool(options.get("ffn_dim"))


def test_causal_block_never_sees_the_future():
    keras.utils.set_random_seed(2)
    block = EncoderBlock(kernel_size=4, block_size=6, num_heads=2, causal=True, dropout=0.0)
    x = np.random.default_rng(0).normal(size=(1, 25, 16)).astype("float32")
    before = ops.convert_to_numpy(block(x))
    x[0, 14:] -= 2.0
    after = ops.convert_to_numpy(block(x))
    np.testing.assert_array_equal(before[0, :14], after[0, :14])


def test_save_load_identical(tmp_path):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, 16))
    x = inputs
    for i in range(2):
        x = EncoderBlock(kernel_size=3, block_size=4, num_heads=2, ffn_dim=32, name=f"b{i}")(x)
    model = keras.Model(inputs, x)
    data = np.random.default_rng(0).normal(size=(2, 11, 16)).astype("float32")
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(model(data)),
                                  ops.convert_to_numpy(keras.models.load_model(path)(data)))


def test_three_blocks_train_at_4096_steps():
    keras.utils.set_random_seed(4)
    blocks = [EncoderBlock(kernel_size=7, block_size=64, num_heads=4, ffn_dim=256)
              for _ in range(3)]
    x = tf.random.normal((2, 4096, 128))
    mask = tf.sequence_mask([4096, 3000], 4096)
    with tf.GradientTape() as tape:
        h = x
        for block in blocks:
            h = block(h, padding_mask=mask, training=True)
        loss = tf.reduce_mean(tf.square(h))
    weights = [w for b in blocks for w in b.trainable_weights]
    grads = tape.gradient(loss, weights)
    assert h.shape == (2, 4096, 128)
    assert np.all(h.numpy()[1, 3000:] == 0.0)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


@pytest.mark.parametrize("options", [{"ffn_dim": 32}, {"use_attention": False, "causal": True}])
def test_layer_contract(options):
    x = np.random.default_rng(0).normal(size=(2, 11, 16)).astype("float32")
    mask = np.arange(11)[None, :] < np.array([[11], [5]])
    out = run_layer_test(
        lambda **kw: EncoderBlock(kernel_size=3, block_size=4, num_heads=2, num_global=2,
                                  **options, **kw),
        x, (2, 11, 16), call_kwargs={"padding_mask": mask})
    assert np.all(out[1, 5:] == 0.0)


def test_unknown_ffn_activation_fails_clearly():
    with pytest.raises(ValueError, match="ffn activation must be one of"):
        EncoderBlock(ffn_dim=8, ffn_activation="swish").build((None, None, 16))


@pytest.mark.parametrize("causal", [False, True])
def test_block_equals_a_numpy_reference(causal):
    """Batch of 3 with different lengths, N = 11 not a multiple of K = 4, dropout off."""
    keras.utils.set_random_seed(5)
    block = EncoderBlock(kernel_size=3, block_size=4, num_heads=2, num_global=2, ffn_dim=24,
                         dropout=0.2, causal=causal)
    x = np.random.default_rng(3).normal(size=(3, 11, 16)).astype("float32")
    mask = np.arange(11)[None, :] < np.array([[11], [6], [9]])
    got = keras.ops.convert_to_numpy(block(x, padding_mask=mask, training=False))
    for row in range(3):
        want = encoder_block_reference(block, x[row].astype("float64"), mask[row])
        np.testing.assert_allclose(got[row], want, atol=1e-4, rtol=1e-4)
