"""Full-attention Transformer block: the O(N^2) baseline the encoder is measured against."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.byte_dropout import ByteDropout
from autorisk_tf.layers.feed_forward import ResidualFeedForward


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """Pre-norm residual block: x + MHA(norm(x)) over all steps, + FFN(norm(.)).

    Built from `keras.layers.MultiHeadAttention` over all steps (a [B, H, N, N] score
    tensor; padding is a [B, 1, N] key mask), so memory grows as O(N^2). Used as the
    baseline of the benchmarks and for ablations.

    Args:
        num_heads: int. Attention heads. Defaults to 4.
        ffn_dim: int. Hidden size of the feed-forward sub-layer; 0 switches it off.
            Defaults to 0.
        dropout: float. Dropout on each sub-layer's output. Defaults to 0.1.
        causal: bool. Attend only to earlier steps. Defaults to False.
        ffn_activation: str. `relu` or `gelu`. Defaults to `relu`.

    Example:
    ```python
    block = TransformerBlock(num_heads=2, ffn_dim=32)
    y = block(keras.random.normal((2, 20, 16)), padding_mask=ops.ones((2, 20), "bool"))
    ```

    References:
        Vaswani et al., "Attention Is All You Need" (2017).
    """

    def __init__(self, num_heads: int = 4, ffn_dim: int = 0, dropout: float = 0.1,
                 causal: bool = False, ffn_activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.ffn_activation = ffn_activation
        self.dropout = dropout
        self.causal = causal
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, width // self.num_heads, name="attention", dtype=self.dtype_policy)
        self.attention.build(input_shape, input_shape)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="attention_norm", dtype="float32")
        self.attention_norm.build(input_shape)
        self.ffn = None
        if self.ffn_dim:
            self.ffn = ResidualFeedForward(self.ffn_dim, self.ffn_activation, self.dropout,
                                           name="ffn", dtype=self.dtype_policy)
            self.ffn.build(input_shape)
        self._dropout = ByteDropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, padding_mask=None, training=None):
        x = inputs
        length = ops.shape(x)[1]
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(x)[:2], "bool")
        padding_mask = ops.cast(padding_mask, "bool")
        # Padded queries attend to the real steps only; their outputs are zeroed below. The
        # key mask stays [B, 1, N] (the softmax broadcasts it), never a [B, N, N] tensor.
        attention_mask = padding_mask[:, None, :]
        if self.causal:
            steps = ops.arange(length)
            attention_mask = ops.logical_and(attention_mask, steps[None, :] <= steps[:, None])
        h = ops.cast(self.attention_norm(ops.cast(x, "float32")), x.dtype)
        h = self.attention(h, h, attention_mask=attention_mask, training=training)
        x = x + self._dropout(h, training=training)
        if self.ffn is not None:
            x = self.ffn(x, training=training)
        return x * ops.cast(padding_mask, x.dtype)[..., None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
                       "dropout": self.dropout, "causal": self.causal,
                       "ffn_activation": self.ffn_activation})
        return config
