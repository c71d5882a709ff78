import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from autorisk_tf.layers import ByteDropout
from tests.layer_testing import D, run_layer_test


def test_layer_contract_and_inference_is_identity():
    x = np.random.default_rng(0).normal(size=(2, 9, D)).astype("float32")
    out = run_layer_test(lambda **kw: ByteDropout(0.2, seed=1, **kw), x, (2, 9, D),
                         num_params=0, run_fit=False)
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_drops_the_rate_and_keeps_the_expectation(rate):
    layer = ByteDropout(rate, seed=2)
    x = np.ones((250, 4001), "float32")  # an element count that is not a multiple of 4
    y = ops.convert_to_numpy(layer(x, training=True))
    assert layer.effective_rate == round(rate * 256) / 256
    dropped = np.mean(y == 0)
    assert abs(dropped - layer.effective_rate) < 0.003
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / (1 - layer.effective_rate)], rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.005
    # Dropped positions are spread evenly over the four bytes of each random number.
    per_byte = [np.mean(y.reshape(-1)[i:-1:4] == 0) for i in range(4)]
    assert max(per_byte) - min(per_byte) < 0.006


def test_new_mask_every_call_and_reproducible_for_a_seed():
    x = np.ones((64, 64), "float32")
    first, second = ByteDropout(0.5, seed=3), ByteDropout(0.5, seed=3)
    a, b = (ops.convert_to_numpy(layer(x, training=True)) for layer in (first, second))
    np.testing.assert_array_equal(a, b)
    again = ops.convert_to_numpy(first(x, training=True))
    assert np.mean(again != a) > 0.3


def test_rate_zero_is_identity_and_bad_rates_fail():
    x = np.random.default_rng(4).normal(size=(3, 5)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(ByteDropout(0.0)(x, training=True)), x)
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="rate must be in"):
            ByteDropout(rate)


def test_traces_with_unknown_shapes():
    layer = ByteDropout(0.25, seed=5)
    run = tf.function(lambda x: layer(x, training=True),
                      input_signature=[tf.TensorSpec((None, None, 8), tf.float32)])
    y = ops.convert_to_numpy(run(tf.ones((3, 5, 8))))
    assert y.shape == (3, 5, 8) and 0 < np.mean(y == 0) < 0.6
