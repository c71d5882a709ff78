"""The sequence encoder: field embedding, stacked encoder blocks, masked pooling."""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.encoder_block import EncoderBlock
from autorisk_tf.layers.feed_forward import FFN_ACTIVATIONS
from autorisk_tf.layers.field_embedding import (
    FieldEmbedding,
    embedding_specs,
    masked_max,
    masked_mean,
)
from autorisk_tf.layers.id_bag import WEIGHTINGS, IdBag
from autorisk_tf.layers.numeric_state import NumericState
from autorisk_tf.layers.recurrent_block import RecurrentBlock
from autorisk_tf.layers.transformer_block import TransformerBlock

BLOCK_TYPES = ("conv_attention", "transformer", "gru")
POOLINGS = ("mean", "max", "attention", "last", "inputs", "ids", "state")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of a `SequenceEncoder` (the `model:` section of a training config).

    Args:
        width: int. Model width D. Defaults to 128.
        num_blocks: int. Stacked blocks. Defaults to 3.
        block_type: str, or a list of one per block (from the input up). `conv_attention`
            (gated separable conv + block attention), `transformer` (full attention, the
            baseline) or `gru` (`RecurrentBlock`, the encoder family of CoLES;
            bidirectional unless `causal`). Defaults to `conv_attention`.
        kernel_size: int. Conv kernel K. Defaults to 7.
        block_size: int. Attention block size. Defaults to 64.
        num_heads: int. Attention heads. Defaults to 4.
        num_global: int. Global summary slots. Defaults to 4.
        ffn_dim: int. Feed-forward hidden size; 0 for none. Defaults to 256.
        ffn_activation: str. Feed-forward activation, `relu` or `gelu`. Defaults to `relu`.
        dropout: float. Dropout in the blocks. Defaults to 0.1.
        use_conv: bool. Keep the conv sub-layers (ablation switch). Defaults to True.
        use_attention: bool. Keep the attention sub-layers. Defaults to True.
        causal: bool. Steps see only earlier steps. Defaults to False.
        merge: str. Field merge, `add` or `concat`. Defaults to `add`.
        field_dim: int. Per-field width for `concat`. Defaults to 32.
        text_dim: int. Text token width. Defaults to 64.
        text_summary: str. `conv` or `mean`. Defaults to `conv`.
        pooling: tuple of str. Pooled vectors concatenated into the sequence embedding, from
            `mean`, `max`, `attention` and `last` (the final output at the most recent
            event) of the final per-step outputs, and `inputs` (the
            masked mean of the field embeddings before the blocks: the bag of what the
            sequence holds, which the blocks may not carry through), and `ids` (`IdBag`:
            which ids of each categorical field the sequence holds, each once, projected
            by a table of its own, `ids_dim` wide), and `state` (`NumericState`: count,
            first, last, min, max and mean of every `continuous` number, per category of
            its `bucket_by` field; no weights). Defaults to `mean` and `attention`.
        ids_dim: int. Width of each field's table for the `ids` pooling (narrower for a
            field with fewer ids). Defaults to 128.
        ids_weighting: str. How the `ids` pooling weighs a held id: `binary` (each 1) or
            `idf` (its inverse document frequency, set from the training data when
            pre-training starts; `IdBag`). Defaults to `binary`.
    """

    width: int = 128
    num_blocks: int = 3
    block_type: str | tuple[str, ...] = "conv_attention"
    kernel_size: int = 7
    block_size: int = 64
    num_heads: int = 4
    num_global: int = 4
    ffn_dim: int = 256
    ffn_activation: str = "relu"
    dropout: float = 0.1
    use_conv: bool = True
    use_attention: bool = True
    causal: bool = False
    merge: str = "add"
    field_dim: int = 32
    text_dim: int = 64
    text_summary: str = "conv"
    pooling: tuple[str, ...] = ("mean", "attention")
    ids_dim: int = 128
    ids_weighting: str = "binary"

    def __post_init__(self):
        if not isinstance(self.block_type, str):
            object.__setattr__(self, "block_type", tuple(self.block_type))
            if len(self.block_type) != self.num_blocks:
                raise ValueError(f"block_type lists {len(self.block_type)} types for "
                                 f"{self.num_blocks} blocks: {self.block_type!r}")
        unknown = set(self.block_types) - set(BLOCK_TYPES)
        if unknown:
            raise ValueError(f"block_type must be one of {BLOCK_TYPES} (or a list of them, "
                             f"one per block), got {self.block_type!r}")
        if self.ffn_activation not in FFN_ACTIVATIONS:
            raise ValueError(f"ffn_activation must be one of {FFN_ACTIVATIONS}, "
                             f"got {self.ffn_activation!r}")
        if self.ids_weighting not in WEIGHTINGS:
            raise ValueError(f"ids_weighting must be one of {WEIGHTINGS}, "
                             f"got {self.ids_weighting!r}")
        unknown = set(self.pooling) - set(POOLINGS)
        if unknown or not self.pooling:
            raise ValueError(f"pooling must be a non-empty subset of {POOLINGS}, "
                             f"got {self.pooling!r}")
        object.__setattr__(self, "pooling", tuple(self.pooling))

    @property
    def block_types(self) -> tuple[str, ...]:
        """The type of each block, from the input up."""
        if isinstance(self.block_type, str):
            return (self.block_type,) * self.num_blocks
        return self.block_type

    @classmethod
    def from_dict(cls, values: dict) -> EncoderConfig:
        """Builds a config from a dict, naming any unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown encoder option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SequenceEncoder(keras.layers.Layer):
    """Ids of a batch of event sequences to per-step outputs and one vector per sequence.

    FieldEmbedding -> N blocks (residual, pre-norm) -> final norm -> masked pooling: the
    masked mean and/or attention pooling (a learned query scores each real step; softmax in
    float32) concatenated.

    Args:
        features: list of dict. Feature specs, as `feature_specs_from_artifacts` returns.
        config: EncoderConfig or dict. Hyper-parameters.

    Returns (from `call`):
        Dict with `sequence` [B, T, D] (padded steps zero), `embedding` [B,
        `embedding_dim`] and `padding_mask` bool [B, T].

    Example:
    ```python
    features = [{"name": "event_type", "kind": "categorical", "vocab_size": 10}]
    encoder = SequenceEncoder(features, EncoderConfig(width=16, num_blocks=1, block_size=4))
    out = encoder({"event_type": ops.array([[4, 5, 6, 0]])})
    out["embedding"].shape  # (1, 32): mean and attention pooling, encoder.embedding_dim
    ```
    """

    def __init__(self, features: list[dict], config: EncoderConfig | dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if config is None:
            config = EncoderConfig()
        elif isinstance(config, dict):
            config = EncoderConfig.from_dict(config)
        self.config = config
        self.features = embedding_specs(features)
        self.supports_masking = True
        c = config
        self.embedding = FieldEmbedding(
            self.features, c.width, merge=c.merge, field_dim=c.field_dim, text_dim=c.text_dim,
            text_summary=c.text_summary, name="field_embedding", dtype=self.dtype_policy)
        self.blocks = []
        for i, block_type in enumerate(c.block_types):
            if block_type == "transformer":
                block = TransformerBlock(c.num_heads, c.ffn_dim, c.dropout, c.causal,
                                         c.ffn_activation, name=f"block_{i}",
                                         dtype=self.dtype_policy)
            elif block_type == "gru":
                block = RecurrentBlock(c.ffn_dim, c.dropout, c.causal, c.ffn_activation,
                                       name=f"block_{i}", dtype=self.dtype_policy)
            else:
                block = EncoderBlock(
                    c.kernel_size, c.block_size, c.num_heads, c.num_global, c.ffn_dim,
                    c.dropout, c.use_conv, c.use_attention, c.causal, c.ffn_activation,
                    name=f"block_{i}", dtype=self.dtype_policy)
            self.blocks.append(block)
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm",
                                                          dtype="float32")
        self.pool_score = None
        if "attention" in c.pooling:
            self.pool_score = keras.layers.Dense(1, name="attention_pool",
                                                 dtype=self.dtype_policy)
        self.id_bag = None
        if "ids" in c.pooling:
            self.id_bag = IdBag(self.features, c.ids_dim, c.ids_weighting, name="id_bag",
                                dtype=self.dtype_policy)
        self.numeric_state = None
        if "state" in c.pooling:
            self.numeric_state = NumericState(self.features, name="numeric_state",
                                              dtype=self.dtype_policy)

    @property
    def pooling_dims(self) -> dict:
        """Width of each pooling's part of the embedding, in the embedding's order."""
        widths = {"ids": self.id_bag.output_dim if self.id_bag else 0,
                  "state": self.numeric_state.output_dim if self.numeric_state else 0}
        return {kind: widths.get(kind, self.config.width) for kind in self.config.pooling}

    @property
    def embedding_dim(self) -> int:
        """Size of the pooled sequence embedding."""
        return sum(self.pooling_dims.values())

    def split_embedding(self, embedding) -> dict:
        """Each pooling's part of embeddings (`mean`, `attention`, `ids`, ...).

        Args:
            embedding: tensor or array [B, `embedding_dim`]. This encoder's embeddings.

        Returns:
            `{pooling: [B, width]}`, in the embedding's order.
        """
        parts, start = {}, 0
        for kind, width in self.pooling_dims.items():
            parts[kind] = embedding[:, start:start + width]
            start += width
        return parts

    def build(self, input_shape):
        shape = (None, None, self.config.width)
        self.embedding.build(input_shape)
        for block in self.blocks:
            block.build(shape)
        self.final_norm.build(shape)
        if self.pool_score is not None:
            self.pool_score.build(shape)
        if self.id_bag is not None:
            self.id_bag.build(input_shape)
        if self.numeric_state is not None:
            self.numeric_state.build(input_shape)

    def call(self, inputs, training=None):
        return self.encode(self.embedding(inputs), inputs, training=training)

    def encode(self, x, inputs, training=None, presence=None):
        """The encoder from merged event vectors on: blocks, final norm and pooling.

        `call` is `encode(self.embedding(inputs), inputs)`; reason codes
        (`autorisk_tf.explain`) call it on vectors between a baseline and the events'.

        Args:
            x: float tensor [B, T, D]. Merged event vectors (`FieldEmbedding`'s output).
            inputs: dict. The ids the vectors came from: the padding mask, and the ids read
                by the `ids` and `state` poolings.
            training: bool or None. Dropout on.
            presence: dict or None. Field -> float tensor [B, T]: how present each event's
                ids are to the `ids` pooling (`IdBag.call`); None: fully.

        Returns:
            Dict with `sequence`, `embedding` and `padding_mask`, as `call`.
        """
        mask = self.embedding.compute_padding_mask(inputs)
        inputs_mean = masked_mean(x, mask, axis=1) if "inputs" in self.config.pooling else None
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)
        x = ops.cast(self.final_norm(ops.cast(x, "float32")), x.dtype)
        x = x * ops.cast(mask, x.dtype)[..., None]
        pooled = []
        for kind in self.config.pooling:
            if kind == "mean":
                pooled.append(masked_mean(x, mask, axis=1))
            elif kind == "max":
                pooled.append(masked_max(x, mask, axis=1))
            elif kind == "inputs":
                pooled.append(inputs_mean)
            elif kind == "ids":
                pooled.append(ops.cast(self.id_bag(inputs, presence=presence), x.dtype))
            elif kind == "state":
                pooled.append(ops.cast(self.numeric_state(inputs), x.dtype))
            elif kind == "last":
                last = ops.maximum(ops.sum(ops.cast(mask, "int32"), axis=1) - 1, 0)
                pooled.append(ops.take_along_axis(x, last[:, None, None], axis=1)[:, 0])
            else:
                weights = ops.cast(self.attention_weights(x, mask), x.dtype)
                pooled.append(ops.einsum("bt,btd->bd", weights, x))
        embedding = pooled[0] if len(pooled) == 1 else ops.concatenate(pooled, axis=-1)
        return {"sequence": x, "embedding": embedding, "padding_mask": mask}

    def attention_weights(self, sequence, mask):
        """The `attention` pooling's weight of each step (softmax over the real steps).

        Args:
            sequence: float tensor [B, T, D]. The final per-step outputs (`sequence`).
            mask: bool tensor [B, T]. Real steps.

        Returns:
            float32 tensor [B, T], summing to 1 over each sequence's real steps.
        """
        scores = ops.cast(self.pool_score(sequence)[..., 0], "float32")
        return ops.softmax(ops.where(mask, scores, -1e9), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features],
                       "config": dataclasses.asdict(self.config)})
        return config
