"""Recurrent (GRU) block: the encoder family of CoLES, for comparison on the real tasks."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.byte_dropout import ByteDropout
from autorisk_tf.layers.feed_forward import ResidualFeedForward


@keras.saving.register_keras_serializable(package=PACKAGE)
class RecurrentBlock(keras.layers.Layer):
    """Pre-norm residual block: x + GRU(norm(x)), + FFN(norm(.)).

    Bidirectional by default: a forward and a backward GRU of D/2 units each, their states
    concatenated to D, so that every step sees the whole sequence (masked-event modelling
    needs both sides). With `causal`, one forward GRU of D units: each step sees only the
    earlier ones, and the last step's state summarises the sequence, as in CoLES. Padded
    steps are skipped by the GRU's mask (the state carries over them) and their outputs
    zeroed, so a sequence gives the same output alone or padded in a batch.

    Args:
        ffn_dim: int. Hidden size of the feed-forward sub-layer; 0 switches it off.
            Defaults to 0.
        dropout: float. Dropout on each sub-layer's output. Defaults to 0.1.
        causal: bool. A forward GRU only. Defaults to False.
        ffn_activation: str. `relu` or `gelu`. Defaults to `relu`.

    Example:
    ```python
    block = RecurrentBlock(ffn_dim=32)
    y = block(keras.random.normal((2, 20, 16)), padding_mask=ops.ones((2, 20), "bool"))
    ```

    References:
        Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder" (2014);
        Babaev et al., "CoLES: Contrastive Learning for Event Sequences with
        Self-Supervision" (SIGMOD 2022).
    """

    def __init__(self, ffn_dim: int = 0, dropout: float = 0.1, causal: bool = False,
                 ffn_activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.ffn_dim = ffn_dim
        self.ffn_activation = ffn_activation
        self.dropout = dropout
        self.causal = causal
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        if not self.causal and width % 2:
            raise ValueError(f"a bidirectional RecurrentBlock needs an even width, got {width}")
        if self.causal:
            self.recurrent = keras.layers.GRU(width, return_sequences=True, name="gru",
                                              dtype=self.dtype_policy)
        else:
            self.recurrent = keras.layers.Bidirectional(
                keras.layers.GRU(width // 2, return_sequences=True, dtype=self.dtype_policy),
                merge_mode="concat", name="gru", dtype=self.dtype_policy)
        self.recurrent.build(input_shape)
        self.recurrent_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, name="recurrent_norm", dtype="float32")
        self.recurrent_norm.build(input_shape)
        self.ffn = None
        if self.ffn_dim:
            self.ffn = ResidualFeedForward(self.ffn_dim, self.ffn_activation, self.dropout,
                                           name="ffn", dtype=self.dtype_policy)
            self.ffn.build(input_shape)
        self._dropout = ByteDropout(self.dropout, dtype=self.dtype_policy)

    def call(self, inputs, padding_mask=None, training=None):
        x = inputs
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(x)[:2], "bool")
        padding_mask = ops.cast(padding_mask, "bool")
        steps = ops.cast(padding_mask, x.dtype)[..., None]
        h = ops.cast(self.recurrent_norm(ops.cast(x, "float32")), x.dtype)
        h = self.recurrent(h, mask=padding_mask, training=training)
        x = x + self._dropout(h * steps, training=training)
        if self.ffn is not None:
            x = self.ffn(x, training=training)
        return x * steps

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"ffn_dim": self.ffn_dim, "dropout": self.dropout, "causal": self.causal,
                       "ffn_activation": self.ffn_activation})
        return config
