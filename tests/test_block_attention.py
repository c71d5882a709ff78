import keras
import numpy as np
import pytest
from keras import ops

from autorisk_tf.layers import BlockAttention
from tests.layer_testing import D, check_causal, check_padding_invariance, run_layer_test
from tests.references import attention_reference, weights_by_path

X = np.random.default_rng(0).normal(size=(2, 13, D)).astype("float32")
MASK = np.arange(13)[None, :] < np.array([[13], [7]])


@pytest.mark.parametrize("options", [{"num_global": 2, "dropout": 0.1}, {"causal": True}])
def test_layer_contract(options):
    out = run_layer_test(lambda **kw: BlockAttention(num_heads=2, block_size=4, **options, **kw),
                         X, (2, 13, D), call_kwargs={"padding_mask": MASK},
                         # q, k, v, output kernels; q and output biases (a key or value bias
                         # would be redundant); the global pool's D x G kernel (G = 2)
                         num_params=4 * D * D + 2 * D + (0 if options.get("causal") else D * 2))
    assert np.all(out[1, 7:] == 0.0)


@pytest.mark.parametrize("length", [16, 21])  # a multiple of the block size, and not
@pytest.mark.parametrize("options", [{"num_global": 3}, {"causal": True}])
def test_padding_invariance(options, length):
    keras.utils.set_random_seed(1)
    check_padding_invariance(BlockAttention(num_heads=2, block_size=8, **options), length)


def test_causal_future_never_changes_the_past():
    keras.utils.set_random_seed(2)
    check_causal(BlockAttention(num_heads=2, block_size=5, causal=True))


@pytest.mark.parametrize("options", [{"num_global": 2}, {"num_global": 0},
                                     {"causal": True}, {"num_global": 3, "dropout": 0.3}])
def test_block_attention_equals_dense_reference(options):
    """Batch of 3 with different lengths, N = 11 not a multiple of K = 4, dropout off."""
    keras.utils.set_random_seed(3)
    layer = BlockAttention(num_heads=2, block_size=4, **options)
    x = np.random.default_rng(1).normal(size=(3, 11, D)).astype("float32")
    mask = np.arange(11)[None, :] < np.array([[11], [9], [3]])
    got = ops.convert_to_numpy(layer(x, padding_mask=mask, training=False))
    w = weights_by_path(layer)
    for row in range(3):
        want = attention_reference(w, x[row].astype("float64"), mask[row], 4,
                                   layer.num_global, layer.causal, layer._head)
        np.testing.assert_allclose(got[row], want, atol=1e-5)


def test_causal_reference_differs_from_the_diagonal_only_attention():
    """The causal reference is sharp: attending to the diagonal of each block alone fails."""
    keras.utils.set_random_seed(4)
    layer = BlockAttention(num_heads=2, block_size=4, causal=True)
    x = np.random.default_rng(2).normal(size=(1, 8, D)).astype("float32")
    mask = np.ones((1, 8), bool)
    got = ops.convert_to_numpy(layer(x, padding_mask=mask))[0]
    w = weights_by_path(layer)
    diagonal_only = attention_reference(w, x[0].astype("float64"), mask[0], 1, 0, True,
                                        layer._head)
    assert np.abs(got - diagonal_only).max() > 1e-2
