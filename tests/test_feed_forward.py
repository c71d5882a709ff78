import keras
import numpy as np
from keras import ops

from autorisk_tf.layers.feed_forward import ResidualFeedForward
from tests.layer_testing import D, run_layer_test


def test_layer_contract():
    x = np.random.default_rng(0).normal(size=(2, 10, D)).astype("float32")
    run_layer_test(lambda **kw: ResidualFeedForward(32, **kw), x, (2, 10, D),
                   num_params=(D * 32 + 32 + 32 * D + D) + 2 * D)


def test_is_the_input_plus_the_ffn_of_its_norm():
    keras.utils.set_random_seed(0)
    sublayer = ResidualFeedForward(8, dropout=0.0)
    x = np.random.default_rng(1).normal(size=(2, 5, D)).astype("float32")
    out = ops.convert_to_numpy(sublayer(x))
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    first, second = sublayer.ffn.layers
    hidden = np.maximum(normed @ ops.convert_to_numpy(first.kernel)
                        + ops.convert_to_numpy(first.bias), 0.0)
    expected = x + hidden @ ops.convert_to_numpy(second.kernel) + ops.convert_to_numpy(
        second.bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)
