"""Root-mean-square layer normalisation with a memory-lean hand-written gradient."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class RMSNorm(keras.layers.Layer):
    """`x / rms(x) * scale` over the last axis.

    Same values as `keras.layers.RMSNormalization`, but its gradient is written by hand so
    that the backward pass keeps only the normalised input and the per-step 1/rms: automatic
    differentiation would also keep the raw input, one more [B, N, D] tensor per norm, and
    take more passes over memory. The statistics and the normalisation are computed in
    float32 under every policy; the output comes back in the layer's compute dtype.

    Args:
        epsilon: float. Added to the mean square. Defaults to 1e-5.

    Example:
    ```python
    norm = RMSNorm()
    y = norm(keras.random.normal((2, 5, 8)))  # each step has a root mean square of 1
    ```

    References:
        Zhang and Sennrich, "Root Mean Square Layer Normalization" (2019).
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.supports_masking = True

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones",
                                     name="scale")

    def call(self, inputs):
        epsilon = self.epsilon

        @ops.custom_gradient
        def normalise(x, scale):
            inverse_rms = ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + epsilon)
            normalised = x * inverse_rms

            def grad(*upstream, **kwargs):
                dy = upstream[0]
                axes = tuple(range(len(dy.shape) - 1))
                d_scale = ops.sum(dy * normalised, axis=axes)
                d_normalised = dy * scale
                projection = ops.mean(d_normalised * normalised, axis=-1, keepdims=True)
                return inverse_rms * (d_normalised - normalised * projection), d_scale

            return normalised * scale, grad

        out = normalise(ops.cast(inputs, "float32"), ops.cast(self.scale, "float32"))
        return ops.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
