import keras
import numpy as np
import pytest
from keras import ops

from autorisk_tf.layers import RecurrentBlock
from tests.layer_testing import D, check_causal, check_padding_invariance, run_layer_test

# A GRU of u units on d inputs (reset_after): 3 gates of u * (d + u) weights and 2 * u biases.
_GRU = lambda d, u: 3 * u * (d + u) + 2 * 3 * u  # noqa: E731
_NORMS_AND_FFN = 2 * 2 * D + (D * 32 + 32 + 32 * D + D)


@pytest.mark.parametrize("causal, recurrent_params", [(False, 2 * _GRU(D, D // 2)),
                                                      (True, _GRU(D, D))])
def test_layer_contract(causal, recurrent_params):
    x = np.random.default_rng(0).normal(size=(2, 10, D)).astype("float32")
    mask = np.arange(10)[None, :] < np.array([[10], [4]])
    out = run_layer_test(lambda **kw: RecurrentBlock(ffn_dim=32, causal=causal, **kw), x,
                         (2, 10, D), call_kwargs={"padding_mask": mask},
                         num_params=recurrent_params + _NORMS_AND_FFN)
    assert np.all(out[1, 4:] == 0.0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [8, 13])
def test_padding_invariance(length, causal):
    keras.utils.set_random_seed(1)
    check_padding_invariance(RecurrentBlock(ffn_dim=32, dropout=0.0, causal=causal), length)


def test_causal():
    keras.utils.set_random_seed(2)
    check_causal(RecurrentBlock(causal=True))


def test_bidirectional_block_sees_both_sides_and_is_its_residual_definition():
    keras.utils.set_random_seed(3)
    block = RecurrentBlock(dropout=0.0)
    x = np.random.default_rng(0).normal(size=(1, 23, D)).astype("float32")
    before = ops.convert_to_numpy(block(x))
    # x + [forward GRU, backward GRU] of the normalised steps, with no FFN
    h = block.recurrent_norm(x)
    forward = block.recurrent.forward_layer(h)
    backward = block.recurrent.backward_layer(h)[:, ::-1]  # Keras returns it reversed
    expected = x + ops.concatenate([forward, backward], axis=-1)
    np.testing.assert_allclose(before, ops.convert_to_numpy(expected), atol=1e-5)
    x[0, 20:] = np.random.default_rng(1).normal(size=(3, D))  # (a shift would be normalised)
    after = ops.convert_to_numpy(block(x))
    assert np.abs(before[0, :5] - after[0, :5]).max() > 1e-3  # early steps see late ones


def test_bidirectional_block_needs_an_even_width():
    with pytest.raises(ValueError, match="even width"):
        RecurrentBlock().build((None, None, 15))
