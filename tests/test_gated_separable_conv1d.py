import keras
import numpy as np
import pytest

from autorisk_tf.layers import GatedSeparableConv1D
from tests.layer_testing import D, check_causal, check_padding_invariance, run_layer_test
from tests.references import conv_reference

X = np.random.default_rng(0).normal(size=(2, 9, D)).astype("float32")
MASK = np.arange(9)[None, :] < np.array([[9], [6]])


@pytest.mark.parametrize("options", [{}, {"dilation_rate": 2, "padding": "causal"},
                                     {"gated": False}])
def test_layer_contract(options):
    pointwise = D * (1 if options.get("gated") is False else 2)
    out = run_layer_test(lambda **kw: GatedSeparableConv1D(kernel_size=3, **options, **kw),
                         X, (2, 9, D), num_trainable_weights=4,
                         num_params=(3 * D + D) + (D * pointwise + pointwise),
                         call_kwargs={"padding_mask": MASK})
    assert np.all(out[1, 6:] == 0.0)


@pytest.mark.parametrize("length", [16, 21])
@pytest.mark.parametrize("options", [{"kernel_size": 5},
                                     {"kernel_size": 3, "dilation_rate": 2, "padding": "causal"}])
def test_padding_invariance(options, length):
    keras.utils.set_random_seed(1)
    check_padding_invariance(GatedSeparableConv1D(**options), length)


def test_causal_future_never_changes_the_past():
    keras.utils.set_random_seed(2)
    check_causal(GatedSeparableConv1D(kernel_size=4, dilation_rate=3, padding="causal"))


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




@pytest.mark.parametrize("padding", ["same", "causal"])
@pytest.mark.parametrize("dilation", [1, 3])
@pytest.mark.parametrize("kernel_size", [3, 4])
@pytest.mark.parametrize("gated", [True, False])
def test_values_equal_a_numpy_reference(padding, dilation, kernel_size, gated):
    rng = np.random.default_rng(kernel_size * 10 + dilation)
    x = rng.normal(size=(3, 13, D)).astype("float32")
    mask = np.arange(13)[None, :] < np.array([[13], [7], [2]])
    layer = GatedSeparableConv1D(kernel_size, dilation_rate=dilation, padding=padding,
                                 gated=gated)
    layer.build((None, None, D))
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5 for w in layer.get_weights()]
    layer.set_weights(weights)  # biases too: zeros would hide a wrong bias path
    got = keras.ops.convert_to_numpy(layer(x, padding_mask=mask))
    want = conv_reference(x.astype(np.float64), mask, weights, kernel_size, dilation,
                          padding, gated)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
