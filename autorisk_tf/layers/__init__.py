"""Keras layers of the encoder (registered under the `autorisk_tf` package)."""

from autorisk_tf.layers.block_attention import BlockAttention
from autorisk_tf.layers.byte_dropout import ByteDropout
from autorisk_tf.layers.encoder_block import EncoderBlock
from autorisk_tf.layers.event_preprocessor import EventPreprocessor, feature_specs_from_artifacts
from autorisk_tf.layers.field_embedding import FieldEmbedding
from autorisk_tf.layers.gated_separable_conv1d import GatedSeparableConv1D
from autorisk_tf.layers.id_bag import IdBag
from autorisk_tf.layers.recurrent_block import RecurrentBlock
from autorisk_tf.layers.rms_norm import RMSNorm
from autorisk_tf.layers.sequence_embedder import SequenceEmbedder
from autorisk_tf.layers.sequence_encoder import EncoderConfig, SequenceEncoder
from autorisk_tf.layers.transformer_block import TransformerBlock

__all__ = ["BlockAttention", "ByteDropout", "EncoderBlock", "EncoderConfig",
           "EventPreprocessor", "FieldEmbedding", "GatedSeparableConv1D", "IdBag",
           "RecurrentBlock", "RMSNorm", "SequenceEmbedder", "SequenceEncoder", "TransformerBlock",
           "feature_specs_from_artifacts"]
