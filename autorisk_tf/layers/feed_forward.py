"""The position-wise feed-forward sub-layer shared by the block types."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.byte_dropout import ByteDropout

FFN_ACTIVATIONS = ("relu", "gelu")


def feed_forward(width: int, ffn_dim: int, activation: str = "relu", dtype=None,
                 name: str = "ffn") -> keras.Sequential:
    """Dense(ffn_dim, activation) then Dense(width), applied to every step.

    Args:
        width: int. Input and output width D.
        ffn_dim: int. Hidden width.
        activation: str. `relu` or `gelu`. ReLU's gradient needs only its output, which the
            second Dense keeps anyway; GELU also keeps its input and costs more passes.
            Defaults to `relu`.
        dtype: dtype policy of the layers.
        name: str. Name of the Sequential.

    Returns:
        An unbuilt `keras.Sequential`.
    """
    if activation not in FFN_ACTIVATIONS:
        raise ValueError(f"ffn activation must be one of {FFN_ACTIVATIONS}, got {activation!r}")
    return keras.Sequential([keras.layers.Dense(ffn_dim, activation=activation, dtype=dtype),
                             keras.layers.Dense(width, dtype=dtype)], name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualFeedForward(keras.layers.Layer):
    """The pre-norm residual feed-forward sub-layer: x + dropout(FFN(LayerNorm(x))).

    Shared by `TransformerBlock` and `RecurrentBlock`; the norm runs in float32 under the
    mixed-precision policies.

    Args:
        ffn_dim: int. Hidden width of the FFN.
        activation: str. `relu` or `gelu`. Defaults to `relu`.
        dropout: float. Dropout on the FFN's output. Defaults to 0.1.

    Example:
    ```python
    sublayer = ResidualFeedForward(32)
    y = sublayer(keras.random.normal((2, 20, 16)))  # [2, 20, 16]
    ```
    """

    def __init__(self, ffn_dim: int, activation: str = "relu", dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.ffn_dim = ffn_dim
        self.activation = activation
        self.dropout = dropout

    def build(self, input_shape):
        self.ffn = feed_forward(input_shape[-1], self.ffn_dim, self.activation,
                                dtype=self.dtype_policy)
        self.ffn.build(input_shape)
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="ffn_norm", dtype="float32")
        self.ffn_norm.build(input_shape)
        self._dropout = ByteDropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, training=None):
        h = ops.cast(self.ffn_norm(ops.cast(inputs, "float32")), inputs.dtype)
        return inputs + self._dropout(self.ffn(h, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"ffn_dim": self.ffn_dim, "activation": self.activation,
                       "dropout": self.dropout})
        return config
