"""Multi-head attention inside fixed-size blocks, plus global summary slots."""

from __future__ import annotations

import math

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.byte_dropout import ByteDropout

_NEG = -1e9


@keras.saving.register_keras_serializable(package=PACKAGE)
class BlockAttention(keras.layers.Layer):
    """Attention within non-overlapping blocks of K steps plus G global summary slots.

    The sequence [B, N, D] is padded to a multiple of K and reshaped to [B, N/K, K, D]; every
    step attends to the steps of its own block and to G global slots. Each slot is an
    attention-pooled summary of the whole (masked) sequence, projected to a key and a value
    like any step, so every step sees a summary of all steps while memory grows as
    O(N * (K + G)) instead of O(N^2). Padded steps are
    never attended to. Softmax runs in float32 under mixed precision.

    In `causal` mode a step attends only to earlier steps of its block and the global slots
    are off (a summary of the whole sequence would leak the future).

    Args:
        num_heads: int. Attention heads.
        block_size: int. Steps per block (K).
        num_global: int. Global summary slots (G). Defaults to 4.
        key_dim: int or None. Size of each head. Defaults to width / num_heads.
        causal: bool. Attend only to earlier steps. Defaults to False.
        dropout: float. Dropout on attention weights. Defaults to 0.

    Example:
    ```python
    attention = BlockAttention(num_heads=2, block_size=8, num_global=2)
    y = attention(keras.random.normal((2, 20, 16)), padding_mask=ops.ones((2, 20), "bool"))
    ```

    References:
        Qiu et al., "Blockwise Self-Attention for Long Document Understanding" (2020);
        Beltagy et al., "Longformer: The Long-Document Transformer" (2020).
    """

    def __init__(self, num_heads: int, block_size: int, num_global: int = 4,
                 key_dim: int | None = None, causal: bool = False, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.block_size = block_size
        self.num_global = 0 if causal else num_global
        self.key_dim = key_dim
        self.causal = causal
        self.dropout = dropout
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        head = self.key_dim or width // self.num_heads
        self._head = head
        shape = (None, self.num_heads, head)
        # Key and value biases are left out: a key bias adds the same score to every key of a
        # query (softmax ignores it) and a value bias adds a constant the output bias covers.
        for name in ("query", "key", "value"):
            layer = keras.layers.EinsumDense(
                "bnd,dhk->bnhk", output_shape=shape, bias_axes="hk" if name == "query" else None,
                name=name, dtype=self.dtype_policy)
            layer.build(input_shape)
            setattr(self, name, layer)
        self.output_dense = keras.layers.EinsumDense(
            "bnhk,hkd->bnd", output_shape=(None, width), bias_axes="d", name="output",
            dtype=self.dtype_policy)
        self.output_dense.build((None, None, self.num_heads, head))
        if self.num_global:
            self.global_pool = keras.layers.Dense(self.num_global, use_bias=False,
                                                  name="global_pool", dtype=self.dtype_policy)
            self.global_pool.build(input_shape)
        self.attention_dropout = ByteDropout(self.dropout, dtype=self.dtype_policy)

    def _softmax(self, scores, valid, axis=-1):
        scores = ops.where(valid, ops.cast(scores, "float32"), _NEG)
        return ops.softmax(scores, axis=axis)

    def call(self, inputs, padding_mask=None, training=None):
        batch, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        if padding_mask is None:
            padding_mask = ops.ones((batch, length), "bool")
        padding_mask = ops.cast(padding_mask, "bool")
        k_size = self.block_size
        padded = (length + k_size - 1) // k_size * k_size
        x = ops.pad(inputs, ((0, 0), (0, padded - length), (0, 0)))
        mask = ops.pad(padding_mask, ((0, 0), (0, padded - length)))
        blocks = padded // k_size
        heads, head = self.num_heads, self._head
        # The 1/sqrt(dh) scale goes into the (small) query weights, not the [B, N, H, dh] queries.
        scale = 1.0 / math.sqrt(head)
        q = ops.einsum("bnd,dhk->bnhk", x, self.query.kernel * scale) + self.query.bias * scale

        def to_blocks(t, order):
            # [B, Np, H, dh] -> [B, nb, H, K, dh] (or [B, nb, H, dh, K] for keys): explicit
            # transposes into batched-matmul layout run faster than einsum's on CPU.
            return ops.transpose(ops.reshape(t, (batch, blocks, k_size, heads, head)), order)

        qb = to_blocks(q, (0, 1, 3, 2, 4))
        kb = to_blocks(self.key(x), (0, 1, 3, 4, 2))  # keys transposed: [B, nb, H, dh, K]
        vb = to_blocks(self.value(x), (0, 1, 3, 2, 4))
        valid = ops.reshape(mask, (batch, blocks, 1, 1, k_size))
        if self.causal:
            steps = ops.arange(k_size)
            valid = ops.logical_and(valid, (steps[None, :] <= steps[:, None]))
        if self.num_global:
            # Every block gets the G slot keys and values after its own K steps.
            slots = self._global_slots(x, mask)  # [B, G, D]
            slot_keys = ops.transpose(self.key(slots), (0, 2, 3, 1))[:, None]  # [B,1,H,dh,G]
            slot_values = ops.transpose(self.value(slots), (0, 2, 1, 3))[:, None]  # [B,1,H,G,dh]
            g = self.num_global
            kb = ops.concatenate(
                [kb, ops.broadcast_to(slot_keys, (batch, blocks, heads, head, g))], axis=4)
            vb = ops.concatenate(
                [vb, ops.broadcast_to(slot_values, (batch, blocks, heads, g, head))], axis=3)
            valid = ops.concatenate([valid, ops.ones((batch, blocks, 1, 1, g), "bool")], -1)
        scores = ops.matmul(qb, kb)  # [B, nb, H, K, K + G]
        weights = self.attention_dropout(self._softmax(scores, valid), training=training)
        out = ops.matmul(ops.cast(weights, x.dtype), vb)  # [B, nb, H, K, dh]
        out = ops.reshape(ops.transpose(out, (0, 1, 3, 2, 4)),
                          (batch, padded, heads, head))[:, :length]
        out = self.output_dense(out)
        return out * ops.cast(padding_mask, out.dtype)[..., None]

    def _global_slots(self, x, mask):
        """Global slots [B, G, D]: attention-pooled summaries of all real steps.

        Each slot pools the steps with its own learned scores (softmax over the whole
        sequence); the slots then go through the same key and value projections as steps.
        """
        scores = self.global_pool(x)  # [B, Np, G]
        weights = ops.cast(self._softmax(scores, mask[..., None], axis=1), x.dtype)
        return ops.einsum("bng,bnd->bgd", weights, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "block_size": self.block_size,
                       "num_global": self.num_global, "key_dim": self.key_dim,
                       "causal": self.causal, "dropout": self.dropout})
        return config
