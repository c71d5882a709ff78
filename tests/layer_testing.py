"""Shared checks for every Keras layer (after keras-hub's `run_layer_test`)."""

import keras
import numpy as np
from keras import ops

D = 16


def _float_output(outputs):
    """The main float output: the tensor itself, or the first float entry of a dict."""
    if isinstance(outputs, dict):
        for value in outputs.values():
            if "float" in keras.backend.standardize_dtype(value.dtype):
                return value
    return outputs


def _numpy(tree):
    return keras.tree.map_structure(lambda t: ops.convert_to_numpy(t), tree)


# Largest error under mixed precision, relative to the float32 output's largest value.
# bfloat16 keeps 8 significant bits (a rounding error of up to 2^-8 = 0.4% per op); float16 11.
MIXED_PRECISION_RTOL = {"mixed_float16": 2e-3, "mixed_bfloat16": 2e-2}
# Ops that must compute in float32 under every policy: softmax and the norms' statistics.
FLOAT32_OPS = ("Softmax", "LogSoftmax", "Rsqrt", "SparseSoftmaxCrossEntropyWithLogits",
               "SoftmaxCrossEntropyWithLogits")


def run_layer_test(make, inputs, expected_shape, num_trainable_weights=None,
                   num_params=None, call_kwargs=None, run_fit=True,
                   mixed_precision_rtol=None):
    """Checks config and serialisation round trips, weights, shapes, fit, mixed precision.

    Args:
        make: callable(**kwargs) -> layer. Builds the layer under test; kwargs such as
            `dtype` are passed through.
        inputs: array or dict of arrays. One batch of inputs.
        expected_shape: tuple. Shape of the main float output on `inputs`.
        num_trainable_weights: int or None. Expected number of trainable variables.
        num_params: int or None. Expected number of trainable scalars.
        call_kwargs: dict or None. Extra call arguments (such as `padding_mask`).
        run_fit: bool. Train one `fit` step and check that weights move.
        mixed_precision_rtol: dict or None. Per policy, the largest error of its output
            against float32, relative to the float32 output's largest value (defaults:
            `MIXED_PRECISION_RTOL`).

    Returns:
        The float32 output on `inputs`, as NumPy.
    """
    call_kwargs = call_kwargs or {}
    keras.utils.set_random_seed(0)
    layer = make()
    want = _numpy(layer(inputs, **call_kwargs))
    main = _float_output(want)
    assert main.shape == tuple(expected_shape)
    assert main.dtype == np.float32 and np.all(np.isfinite(main))
    if num_trainable_weights is not None:
        assert len(layer.trainable_weights) == num_trainable_weights
    if num_params is not None:
        assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == num_params

    # Config and serialisation round trips give the same layer and, with its weights,
    # the same outputs.
    config = layer.get_config()
    assert layer.__class__.from_config(config).get_config() == config
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    clone(inputs, **call_kwargs)
    clone.set_weights(layer.get_weights())
    keras.tree.map_structure(np.testing.assert_array_equal, want,
                             _numpy(clone(inputs, **call_kwargs)))

    # Symbolic call: batch and time unknown, trailing axes known.
    def symbolic(x):
        x = np.asarray(x)
        dtype = "string" if x.dtype.kind in "OUS" else keras.backend.standardize_dtype(x.dtype)
        return keras.Input(shape=((None,) + x.shape[2:])[: x.ndim - 1], dtype=dtype)

    sym_out = _float_output(layer(keras.tree.map_structure(symbolic, inputs)))
    assert tuple(sym_out.shape)[-1] == expected_shape[-1]
    assert len(sym_out.shape) == len(expected_shape)

    if run_fit and layer.trainable_weights:
        _one_fit_step(make, inputs, call_kwargs, main.shape)
    rtol = {**MIXED_PRECISION_RTOL, **(mixed_precision_rtol or {})}
    for policy in ("mixed_float16", "mixed_bfloat16"):
        mixed = make(dtype=policy)
        mixed(inputs, **call_kwargs)
        mixed.set_weights(layer.get_weights())
        got = _float_output(mixed(inputs, **call_kwargs))
        assert keras.backend.standardize_dtype(got.dtype) == policy.split("_")[1]
        got = ops.convert_to_numpy(ops.cast(got, "float32"))
        assert np.all(np.isfinite(got))
        error = np.abs(got - main).max() / np.abs(main).max()
        assert error <= rtol[policy], f"{policy}: error {error:.2e} of the output's scale"
        assert_float32_internals(lambda layer=mixed: layer(inputs, **call_kwargs))
    return want


def op_dtypes(fn) -> dict[str, set[str]]:
    """Traces `fn` with tf.function; returns each op type's output dtypes (nested too)."""
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function().graph
    found: dict[str, set[str]] = {}
    graphs, seen = [graph], set()
    while graphs:
        g = graphs.pop()
        for op in g.get_operations():
            found.setdefault(op.type, set()).update(t.dtype.name for t in op.outputs)
        for name, function in getattr(g, "_functions", {}).items():
            if name not in seen:
                seen.add(name)
                graphs.append(function.graph)
    return found


def assert_float32_internals(fn) -> None:
    """Asserts every softmax, norm statistic and cross-entropy inside `fn` is float32."""
    for op_type, dtypes in op_dtypes(fn).items():
        if op_type in FLOAT32_OPS:
            assert dtypes == {"float32"}, f"{op_type} computes in {sorted(dtypes)}"


class Probe(keras.Model):
    """Wraps a layer as a model that returns its main float output."""

    def __init__(self, layer, call_kwargs):
        super().__init__(name="probe")
        self.layer = layer
        self.call_kwargs = call_kwargs

    def call(self, inputs, training=None):
        outputs = self.layer(inputs, **self.call_kwargs)
        main = _float_output(outputs)
        if isinstance(outputs, dict):  # every float output gets a gradient
            for value in outputs.values():
                if value is not main and "float" in keras.backend.standardize_dtype(value.dtype):
                    # Unequal weights: a plain mean of a normalised (centred) vector is 0
                    # whatever its inputs, which would hide the gradient of what feeds it.
                    weights = ops.linspace(-1.0, 2.0, value.shape[-1])
                    main = main + ops.mean(value * ops.cast(weights, value.dtype),
                                           axis=-1)[:, None, None]
        return main


def _one_fit_step(make, inputs, call_kwargs, shape):
    model = Probe(make(), call_kwargs)
    model(inputs)
    before = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    target = np.random.default_rng(1).normal(size=shape).astype("float32")
    history = model.fit(keras.tree.map_structure(np.asarray, inputs) if isinstance(inputs, dict)
                        else np.asarray(inputs), target, batch_size=shape[0], epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
    still = [w.path for b, w in zip(before, model.trainable_weights, strict=True)
             if np.array_equal(b, ops.convert_to_numpy(w))]
    assert not still, f"one fit step did not move {still}"


def alone_vs_padded(layer, length, seed=0):
    """Outputs of one sequence alone and inside a batch padded to 3x its length.

    Args:
        layer: callable(x, padding_mask=...) on [B, T, D] inputs.
        length: int. Length of the sequence.
        seed: int. Seed of the random inputs.

    Returns:
        `(alone, padded, tail)`: the sequence's output alone [length, D], the same rows
        taken from the padded batch, and the padded batch's rows past `length`.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, length, D)).astype("float32")
    alone = layer(x, padding_mask=np.ones((1, length), bool))
    batch = rng.normal(size=(3, 3 * length, D)).astype("float32") * 5  # garbage in padding
    batch[1, :length] = x[0]
    mask = np.zeros((3, 3 * length), bool)
    mask[0, : 2 * length] = True
    mask[1, :length] = True
    mask[2, :] = True
    padded = ops.convert_to_numpy(layer(batch, padding_mask=mask))
    return ops.convert_to_numpy(alone)[0], padded[1, :length], padded[1, length:]


def check_padding_invariance(layer, length):
    """Asserts a [B, T, D] layer gives the same rows alone and padded, zeros when padded."""
    alone, padded, tail = alone_vs_padded(layer, length)
    np.testing.assert_allclose(alone, padded, atol=1e-5)
    assert np.all(tail == 0.0)  # padded steps give zeros
    assert np.abs(alone).max() > 1e-3  # not a trivially zero layer


def check_causal(layer):
    """Asserts changing steps >= 12 of a length-23 input never changes steps < 12."""
    x = np.random.default_rng(0).normal(size=(1, 23, D)).astype("float32")
    before = ops.convert_to_numpy(layer(x))
    x[0, 12:] += 3.0
    after = ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(before[0, :12], after[0, :12])
    assert np.abs(before[0, 12:] - after[0, 12:]).max() > 1e-3
