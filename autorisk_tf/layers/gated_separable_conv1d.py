"""Gated depthwise-separable 1-D convolution over event sequences."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedSeparableConv1D(keras.layers.Layer):
    """Depthwise conv (kernel K, dilation) then a pointwise projection and a GLU gate.

    Local context for long event sequences at a fraction of a full convolution's weights:
    a depthwise conv mixes K neighbouring steps per channel (K*D weights), then a pointwise
    projection mixes channels (D*2D weights when gated, D*D when not) and the gated linear
    unit keeps `a * sigmoid(b)` of its two halves. Padded steps are zeroed before the conv so
    they cannot leak into real steps, and zeroed again in the output.

    Args:
        kernel_size: int. Steps the depthwise conv spans.
        dilation_rate: int. Dilation of the depthwise conv. Defaults to 1.
        padding: str. `same` (centred) or `causal` (step t sees steps <= t only).
            Defaults to `same`.
        gated: bool. Project to 2D and apply the GLU gate; else project to D.
            Defaults to True.

    Example:
    ```python
    conv = GatedSeparableConv1D(kernel_size=5)
    y = conv(keras.random.normal((2, 10, 16)), padding_mask=ops.ones((2, 10), "bool"))
    ```

    References:
        Dauphin et al., "Language Modeling with Gated Convolutional Networks" (2017);
        Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions" (2017).
    """

    def __init__(self, kernel_size: int, dilation_rate: int = 1, padding: str = "same",
                 gated: bool = True, **kwargs):
        super().__init__(**kwargs)
        if padding not in ("same", "causal"):
            raise ValueError(f"padding must be 'same' or 'causal', got {padding!r}")
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.padding = padding
        self.gated = gated
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        # DepthwiseConv1D rejects padding="causal": pad explicitly, then convolve "valid".
        self.depthwise = keras.layers.DepthwiseConv1D(
            self.kernel_size, dilation_rate=self.dilation_rate, padding="valid",
            name="depthwise", dtype=self.dtype_policy)
        self.depthwise.build(input_shape)
        self.pointwise = keras.layers.Dense(width * (2 if self.gated else 1), name="pointwise",
                                            dtype=self.dtype_policy)
        self.pointwise.build(input_shape)
        span = (self.kernel_size - 1) * self.dilation_rate
        self._pads = (span, 0) if self.padding == "causal" else (span // 2, span - span // 2)

    def call(self, inputs, padding_mask=None):
        x = inputs
        if padding_mask is not None:
            mask = ops.cast(padding_mask, x.dtype)[..., None]
            x = x * mask
        x = ops.pad(x, ((0, 0), self._pads, (0, 0)))
        x = self.pointwise(self.depthwise(x))
        if self.gated:
            a, b = ops.split(x, 2, axis=-1)
            x = a * ops.sigmoid(b)
        if padding_mask is not None:
            x = x * mask
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "dilation_rate": self.dilation_rate,
                       "padding": self.padding, "gated": self.gated})
        return config
