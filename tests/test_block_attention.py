import keras
import numpy as np
import pytest
from keras import ops

from autorisk_tf.layers import BlockAttention
from tests.layer_testing import D, check_causal, check_padding_invariance, run_layer_test

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


def _dense_reference(layer, x, mask):
    """Block attention with global slots computed with an explicit dense mask."""
    w = {v.path.split("/")[-2] + "/" + v.name: ops.convert_to_numpy(v) for v in layer.weights}
    head = layer._head

    def proj(name):
        return np.einsum("nd,dhk->nhk", x, w[f"{name}/kernel"]) + w.get(f"{name}/bias", 0.0)

    def softmax(s):
        s = s - s.max(-1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(-1, keepdims=True)

    q, k, v = proj("query") / np.sqrt(head), proj("key"), proj("value")
    pool = np.where(mask[:, None], x @ w["global_pool/kernel"], -1e9)  # [N, G]
    slots = softmax(pool.T) @ x  # [G, D]: attention-pooled summaries of the real steps
    gk = np.einsum("gd,dhk->ghk", slots, w["key/kernel"])
    gv = np.einsum("gd,dhk->ghk", slots, w["value/kernel"])
    keys = np.concatenate([k, gk], 0)
    values = np.concatenate([v, gv], 0)
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


