import keras
import numpy as np
import pytest

from autorisk_tf.layers import TransformerBlock
from tests.layer_testing import D, check_causal, check_padding_invariance, run_layer_test


def test_layer_contract():
    x = np.random.default_rng(0).normal(size=(2, 10, D)).astype("float32")
    mask = np.arange(10)[None, :] < np.array([[10], [4]])
    out = run_layer_test(lambda **kw: TransformerBlock(num_heads=2, ffn_dim=32, **kw), x,
                         (2, 10, D), call_kwargs={"padding_mask": mask},
                         num_params=4 * (D * D + D) + (D * 32 + 32 + 32 * D + D) + 4 * D)
    assert np.all(out[1, 4:] == 0.0)


@pytest.mark.parametrize("length", [8, 13])
def test_padding_invariance(length):
    keras.utils.set_random_seed(1)
    check_padding_invariance(TransformerBlock(num_heads=2, ffn_dim=32, dropout=0.0), length)


def test_causal():
    keras.utils.set_random_seed(2)
    check_causal(TransformerBlock(num_heads=2, causal=True))
