"""Multi-field event embedding: one vector per event from all of its fields."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.data.artifacts import OOV_ID, PAD_ID
from autorisk_tf.layers.event_preprocessor import PADDING_MASK, value_input

MERGES = ("add", "concat")
# Tables up to this many rows are read by a one-hot matmul instead of a gather: its gradient
# is a dense matmul, where a gather's is a scatter-add that runs on one CPU thread and that
# optimizers densify again (`benchmarks/embedding_bench.py` measures the crossover).
ONE_HOT_MAX_VOCAB = 128
TEXT_SUMMARIES = ("conv", "mean")


def masked_max(x, mask, axis):
    """Max over `axis` of the steps where `mask` is true; 0 where none is.

    Args:
        x: tensor [..., N, ..., D]. Values.
        mask: bool tensor of `x`'s shape without the last axis.
        axis: int. Axis to reduce.

    Returns:
        `x` reduced over `axis`.
    """
    mask = mask[..., None]
    lowest = ops.cast(-3e4 if x.dtype == "float16" else -1e9, x.dtype)
    best = ops.max(ops.where(mask, x, lowest), axis=axis)
    return ops.where(ops.any(mask, axis=axis), best, ops.zeros_like(best))


def masked_mean(x, mask, axis):
    """Mean over `axis` of the steps where `mask` is true; 0 where none is.

    Args:
        x: tensor [..., N, ..., D]. Values.
        mask: bool tensor of `x`'s shape without the last axis.
        axis: int. Axis to reduce.

    Returns:
        `x` reduced over `axis`.
    """
    weights = ops.cast(mask, x.dtype)[..., None]
    total = ops.sum(x * weights, axis=axis)
    return total / ops.maximum(ops.sum(weights, axis=axis), ops.cast(1, x.dtype))


def embedding_specs(features: list[dict]) -> list[dict]:
    """What a model needs of feature specs: name, kind, sizes, continuous, multi, bucket_by.

    Args:
        features: list of dict. Feature specs from `feature_specs_from_artifacts`.

    Returns:
        The specs without vocabularies, boundaries or scales, which stay in the preprocessor.
    """
    keys = ("name", "kind", "vocab_size", "hash_buckets", "continuous", "multi", "bucket_by")
    return [{k: spec[k] for k in keys if k in spec} for spec in features]


def num_ids(spec: dict) -> int:
    """Rows of a feature's embedding table: `vocab_size`, plus its hashed ids."""
    return spec["vocab_size"] + spec.get("hash_buckets", 0)


def vocabulary_ids(spec: dict, ids):
    """A feature's ids as prediction targets: hashed ids (past the vocabulary) become OOV.

    A head predicts over the `vocab_size` ids; the hashed ones have no class of their own.
    """
    if not spec.get("hash_buckets"):
        return ids
    return ops.where(ids >= spec["vocab_size"], ops.cast(OOV_ID, ids.dtype), ids)


def gather_rows(table, ids, dtype):
    """The rows `ids` of a `keras.layers.Embedding`'s table, read sparsely.

    `table(ids)` reads the whole variable, then gathers; when the optimizer then writes the
    rows the batch used, TensorFlow copies the whole table first (the read still holds its
    buffer). `tf.gather` on the variable itself reads only the rows, so a step costs the
    same for a table of a million rows as for one of ten thousand.

    Args:
        table: keras.layers.Embedding. A built embedding layer.
        ids: int tensor. Row ids.
        dtype: the dtype of the result (the layer's compute dtype).

    Returns:
        float tensor [*ids.shape, width].
    """
    import tensorflow as tf

    return ops.cast(tf.gather(table.embeddings.value, ops.cast(ids, "int32")), dtype)


def per_token(spec: dict) -> bool:
    """Whether a feature's ids have a values axis: [B, T, L] (text, multi-valued)."""
    return spec["kind"] == "text" or bool(spec.get("multi"))


@keras.saving.register_keras_serializable(package=PACKAGE)
class FieldEmbedding(keras.layers.Layer):
    """Embeds every field of every event and merges them into one vector per event.

    One table per categorical field, numeric bucket field and time feature; a `continuous`
    numeric field adds a learned vector times its standardised value (`<name>/value`) to
    its bucket's vector; a multi-valued categorical field (`multi`, ids [B, T, L]) sums
    the vectors of an event's values. A text field's
    tokens are embedded and summarised per event, by a small Conv1D followed by a masked max
    over the tokens (`conv`) or by a masked average (`mean`). Fields are merged by `add`
    (every table has the model width) or `concat` (tables of `field_dim`, then a dense
    projection to the width). Padded events (id 0) give zero vectors.

    Args:
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`), as
            `feature_specs_from_artifacts` returns them.
        width: int. Output width D.
        merge: str. `add` or `concat`. Defaults to `add`.
        field_dim: int. Per-field width for `concat`. Defaults to 32.
        text_dim: int. Token embedding width. Defaults to 64.
        text_summary: str. `conv` or `mean`. Defaults to `conv`.
        text_kernel_size: int. Kernel of the text Conv1D. Defaults to 3.

    Returns (from `call`):
        float tensor [B, T, D]; `compute_padding_mask` gives the bool mask [B, T].

    Example:
    ```python
    features = [{"name": "event_type", "kind": "categorical", "vocab_size": 10}]
    embedding = FieldEmbedding(features, width=16)
    y = embedding({"event_type": ops.array([[4, 5, 0]])})  # [1, 3, 16], last step zero
    ```
    """

    def __init__(self, features: list[dict], width: int, merge: str = "add",
                 field_dim: int = 32, text_dim: int = 64, text_summary: str = "conv",
                 text_kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        if text_summary not in TEXT_SUMMARIES:
            raise ValueError(f"text_summary must be one of {TEXT_SUMMARIES}, "
                             f"got {text_summary!r}")
        if not features:
            raise ValueError("FieldEmbedding needs at least one feature")
        # Only what the embedding needs: vocabularies and boundaries stay in the preprocessor.
        self.features = embedding_specs(features)
        self.width = width
        self.merge = merge
        self.field_dim = field_dim
        self.text_dim = text_dim
        self.text_summary = text_summary
        self.text_kernel_size = text_kernel_size
        self.supports_masking = True
        out_dim = width if merge == "add" else field_dim
        self._tables, self._text_convs, self._text_projections = {}, {}, {}
        self._values = {}
        for spec in self.features:
            name = key = spec["name"]
            text = spec["kind"] == "text"
            if spec.get("continuous"):
                self._values[name] = keras.layers.Dense(
                    out_dim, use_bias=False, name=f"value_{key}", dtype=self.dtype_policy)
            self._tables[name] = keras.layers.Embedding(
                num_ids(spec), text_dim if text else out_dim, name=f"embed_{key}",
                dtype=self.dtype_policy)
            if text and text_summary == "conv":
                self._text_convs[name] = keras.layers.Conv1D(
                    text_dim, text_kernel_size, padding="same", activation="relu",
                    name=f"text_conv_{key}", dtype=self.dtype_policy)
            if text and text_dim != out_dim:
                self._text_projections[name] = keras.layers.Dense(
                    out_dim, name=f"text_proj_{key}", dtype=self.dtype_policy)
        self._projection = None
        if merge == "concat":
            self._projection = keras.layers.Dense(width, name="projection",
                                                  dtype=self.dtype_policy)

    def build(self, input_shape):
        for spec in self.features:
            name = spec["name"]
            self._tables[name].build(None)
            if name in self._text_convs:
                self._text_convs[name].build((None, None, self.text_dim))
            if name in self._text_projections:
                self._text_projections[name].build((None, self.text_dim))
            if name in self._values:
                self._values[name].build((None, 1))
        if self._projection is not None:
            self._projection.build((None, None, self.field_dim * len(self.features)))

    def table(self, name: str):
        """The embedding table of one field: a variable [vocab size, dim]."""
        if name not in self._tables:
            raise ValueError(f"no field {name!r}; fields: {sorted(self._tables)}")
        return self._tables[name].embeddings

    def compute_padding_mask(self, inputs):
        """Bool [B, T]: true at real events (the preprocessor's mask, or ids != 0)."""
        if PADDING_MASK in inputs:
            return ops.cast(inputs[PADDING_MASK], "bool")
        spec = self.features[0]
        ids = inputs[spec["name"]]
        return (ids[..., 0] if per_token(spec) else ids) != PAD_ID

    def _summarise_text(self, name, ids):
        # Each distinct token row of the batch is summarised once, then gathered back to its
        # events: item names repeat across events, and every padded event is the same empty
        # row (`benchmarks/train_bench.py` measures the step with and without this).
        shape = ops.shape(ids)
        rows, index = ops.unique(ops.reshape(ids, (-1, shape[2])), sorted=False,
                                 return_inverse=True, axis=0)
        tokens = self._tables[name](rows)  # [U, L, E]
        token_mask = rows != PAD_ID
        if name in self._text_convs:
            tokens = tokens * ops.cast(token_mask, tokens.dtype)[..., None]
            summary = masked_max(self._text_convs[name](tokens), token_mask, axis=1)
        else:
            summary = masked_mean(tokens, token_mask, axis=1)
        if name in self._text_projections:
            summary = self._text_projections[name](summary)
        summary = ops.take(summary, index, axis=0)
        return ops.reshape(summary, (shape[0], shape[1], ops.shape(summary)[-1]))

    def _lookup(self, spec, ids):
        table = self._tables[spec["name"]]
        if num_ids(spec) > ONE_HOT_MAX_VOCAB:
            return gather_rows(table, ids, self.compute_dtype)
        one_hot = ops.one_hot(ids, num_ids(spec), dtype=self.compute_dtype)
        return ops.matmul(one_hot, ops.cast(table.embeddings, self.compute_dtype))

    def call(self, inputs):
        vectors = self.field_vectors(inputs)
        if self.merge == "add":
            x = vectors[0]
            for vector in vectors[1:]:
                x = x + vector
        else:
            x = self._projection(ops.concatenate(vectors, axis=-1))
        return x * ops.cast(self.compute_padding_mask(inputs), x.dtype)[..., None]

    def field_vectors(self, inputs) -> list:
        """Each field's vector of every event, before the merge, in `features` order.

        Args:
            inputs: dict. Ids (and `<name>/value` numbers) of a batch.

        Returns:
            list of float tensors [B, T, width] (`add`) or [B, T, field_dim] (`concat`).
        """
        vectors = []
        for spec in self.features:
            ids = ops.cast(inputs[spec["name"]], "int32")
            if spec["kind"] == "text":
                vectors.append(self._summarise_text(spec["name"], ids))
            elif spec.get("multi"):
                values = self._lookup(spec, ids)  # [B, T, L, D]
                vectors.append(ops.sum(values * ops.cast(ids != PAD_ID, values.dtype)[..., None],
                                       axis=2))
            else:
                vectors.append(self._lookup(spec, ids))
            if spec["name"] in self._values:
                value = ops.cast(inputs[value_input(spec["name"])], self.compute_dtype)
                vectors[-1] = vectors[-1] + self._values[spec["name"]](value[..., None])
        return vectors

    def field_shares(self, vectors) -> list:
        """Each field's additive share of the merged vector (`call` is their sum + a bias).

        Under `add` the shares are the fields' vectors; under `concat`, each field's vector
        times its rows of the projection (the projection's bias belongs to no field).

        Args:
            vectors: list of tensors. `field_vectors` of a batch.

        Returns:
            list of float tensors [B, T, width], in `features` order (padding not masked).
        """
        if self.merge == "add":
            return list(vectors)
        kernel = ops.cast(self._projection.kernel, self.compute_dtype)
        return [ops.matmul(vector, kernel[i * self.field_dim:(i + 1) * self.field_dim])
                for i, vector in enumerate(vectors)]

    def compute_mask(self, inputs, previous_mask=None):
        return self.compute_padding_mask(inputs)

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features],
                       "width": self.width, "merge": self.merge, "field_dim": self.field_dim,
                       "text_dim": self.text_dim, "text_summary": self.text_summary,
                       "text_kernel_size": self.text_kernel_size})
        return config

