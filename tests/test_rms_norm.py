import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from autorisk_tf.layers import RMSNorm
from tests.layer_testing import D, alone_vs_padded, run_layer_test

X = np.random.default_rng(0).normal(1.0, 2.0, size=(3, 11, D)).astype("float32")


def test_layer_contract():
    out = run_layer_test(lambda **kw: RMSNorm(**kw), X, (3, 11, D), num_params=D)
    np.testing.assert_allclose(np.sqrt((out**2).mean(-1)), 1.0, atol=1e-4)


def test_values_and_gradients_equal_keras_rms_normalization():
    keras.utils.set_random_seed(0)
    ours, reference = RMSNorm(epsilon=1e-5), keras.layers.RMSNormalization(epsilon=1e-5)
    ours.build(X.shape)
    reference.build(X.shape)
    scale = np.random.default_rng(1).normal(size=D).astype("float32")
    ours.scale.assign(scale)
    reference.scale.assign(scale)
    x = tf.constant(X)
    upstream = tf.constant(np.random.default_rng(2).normal(size=X.shape).astype("float32"))
    results = []
    for layer in (ours, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * upstream)
        results.append([y, *tape.gradient(loss, [x, layer.scale.value])])
    for got, want in zip(results[0], results[1], strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(got), ops.convert_to_numpy(want),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(D,), (2, 3, 4, D)])
def test_any_rank(shape):
    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    y = ops.convert_to_numpy(RMSNorm()(x))
    np.testing.assert_allclose(y, x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5),
                               rtol=1e-5)


def test_same_rows_alone_or_padded_in_a_batch():
    norm = RMSNorm()
    alone, padded, _ = alone_vs_padded(lambda x, padding_mask: norm(x), 13)
    np.testing.assert_allclose(alone, padded, atol=1e-6)
