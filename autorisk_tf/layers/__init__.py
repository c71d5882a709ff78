"""Keras layers of the encoder (registered under the `autorisk_tf` package)."""

from autorisk_tf.layers.block_attention import BlockAttention
from autorisk_tf.layers.encoder_block import EncoderBlock
from autorisk_tf.layers.gated_separable_conv1d import GatedSeparableConv1D

__all__ = ["BlockAttention", "EncoderBlock", "GatedSeparableConv1D"]
