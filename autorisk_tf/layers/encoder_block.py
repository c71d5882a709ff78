"""One encoder block: conv sub-layer, block-attention sub-layer, optional feed-forward."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.block_attention import BlockAttention
from autorisk_tf.layers.byte_dropout import ByteDropout
from autorisk_tf.layers.feed_forward import feed_forward
from autorisk_tf.layers.gated_separable_conv1d import GatedSeparableConv1D
from autorisk_tf.layers.rms_norm import RMSNorm


@keras.saving.register_keras_serializable(package=PACKAGE)
class EncoderBlock(keras.layers.Layer):
    """Pre-norm residual block: x + conv(norm(x)), + attention(norm(.)), + ffn(norm(.)).

    The gated separable conv gives local context, block attention with global slots gives
    global context; either can be switched off for ablations. The norms are `RMSNorm`s,
    computed in float32 under mixed precision. Padded steps stay zero in the output.

    Args:
        kernel_size: int. Conv kernel. Defaults to 7.
        block_size: int. Attention block size. Defaults to 64.
        num_heads: int. Attention heads. Defaults to 4.
        num_global: int. Global summary slots. Defaults to 4.
        ffn_dim: int. Hidden size of the feed-forward sub-layer; 0 switches it off.
            Defaults to 0.
        ffn_activation: str. `relu` or `gelu`. Defaults to `relu`.
        dropout: float. Dropout on each sub-layer's output. Defaults to 0.1.
        use_conv: bool. Keep the conv sub-layer. Defaults to True.
        use_attention: bool. Keep the attention sub-layer. Defaults to True.
        causal: bool. Causal conv and attention. Defaults to False.

    Example:
    ```python
    block = EncoderBlock(kernel_size=5, block_size=8, num_heads=2)
    y = block(keras.random.normal((2, 20, 16)), padding_mask=ops.ones((2, 20), "bool"))
    ```
    """

    def __init__(self, kernel_size: int = 7, block_size: int = 64, num_heads: int = 4,
                 num_global: int = 4, ffn_dim: int = 0, dropout: float = 0.1,
                 use_conv: bool = True, use_attention: bool = True, causal: bool = False,
                 ffn_activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if not (use_conv or use_attention or ffn_dim):
            raise ValueError("an EncoderBlock needs at least one sub-layer")
        self.kernel_size = kernel_size
        self.block_size = block_size
        self.num_heads = num_heads
        self.num_global = num_global
        self.ffn_dim = ffn_dim
        self.ffn_activation = ffn_activation
        self.dropout = dropout
        self.use_conv = use_conv
        self.use_attention = use_attention
        self.causal = causal
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        self._sublayers = []
        if self.use_conv:
            self._sublayers.append(("conv", GatedSeparableConv1D(
                self.kernel_size, padding="causal" if self.causal else "same", name="conv",
                dtype=self.dtype_policy)))
        if self.use_attention:
            self._sublayers.append(("attention", BlockAttention(
                self.num_heads, self.block_size, self.num_global, causal=self.causal,
                name="attention", dtype=self.dtype_policy)))
        if self.ffn_dim:
            self._sublayers.append(("ffn", feed_forward(
                width, self.ffn_dim, self.ffn_activation, dtype=self.dtype_policy)))
        self._norms = []
        for name, layer in self._sublayers:
            norm = RMSNorm(epsilon=1e-5, name=f"{name}_norm", dtype="float32")
            norm.build(input_shape)
            layer.build(input_shape)
            self._norms.append(norm)
        self._dropout = ByteDropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, padding_mask=None, training=None):
        x = inputs
        mask = None if padding_mask is None else ops.cast(padding_mask, x.dtype)[..., None]
        for (name, layer), norm in zip(self._sublayers, self._norms, strict=True):
            h = ops.cast(norm(ops.cast(x, "float32")), x.dtype)
            if name == "ffn":
                h = layer(h, training=training)
                h = h if mask is None else h * mask
            else:
                h = layer(h, padding_mask=padding_mask)
            x = x + self._dropout(h, training=training)
        return x if mask is None else x * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in (
            "kernel_size", "block_size", "num_heads", "num_global", "ffn_dim", "dropout",
            "use_conv", "use_attention", "causal", "ffn_activation")})
        return config
