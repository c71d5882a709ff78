"""Which ids a sequence holds, as a learned projection: the `ids` pooling of the encoder."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from autorisk_tf.contract import PACKAGE
from autorisk_tf.data.artifacts import NUM_RESERVED_IDS
from autorisk_tf.layers.field_embedding import embedding_specs, gather_rows, num_ids

WEIGHTINGS = ("binary", "idf")


def bag_fields(features: list[dict]) -> list[dict]:
    """The fields with a bag of ids: every categorical field with vocabulary ids."""
    return [spec for spec in features
            if spec["kind"] == "categorical" and spec["vocab_size"] > NUM_RESERVED_IDS]


def bag_targets(ids: dict, features: list[dict]) -> dict:
    """Each field's distribution of vocabulary ids over every sequence of a batch.

    Args:
        ids: dict. Unmasked ids [B, T] per field ([B, T, L] for multi-valued fields).
        features: list of dict. Feature specs; `bag_fields` of them are used.

    Returns:
        `{field: float32 [B, V]}`: counts of each vocabulary id (reserved ids, padding,
        missing and unknown values excluded) divided by their sum; all zero for a sequence
        with none.
    """
    out = {}
    for spec in bag_fields(features):
        size = spec["vocab_size"]
        flat = tf.reshape(ids[spec["name"]], [tf.shape(ids[spec["name"]])[0], -1])
        counts = tf.math.bincount(tf.cast(flat, tf.int32), minlength=size,
                                  maxlength=size, axis=-1, dtype=tf.float32)
        counts = counts * tf.cast(tf.range(size) >= NUM_RESERVED_IDS, tf.float32)[None, :]
        total = tf.reduce_sum(counts, axis=-1, keepdims=True)
        out[spec["name"]] = counts / tf.maximum(total, 1.0)
    return out


def id_fields(features: list[dict]) -> list[dict]:
    """The fields the `ids` pooling reads: categorical fields with vocabulary or hashed ids."""
    return [spec for spec in features
            if spec["kind"] == "categorical" and num_ids(spec) > NUM_RESERVED_IDS]


@keras.saving.register_keras_serializable(package=PACKAGE)
class IdBag(keras.layers.Layer):
    """The L2-normalised binary bag of each categorical field's ids, times a table of its own.

    Per field, one learned vector per id, summed over the distinct ids of the sequence
    (each once, however often it occurs) and divided by the square root of their number:
    a linear map of the same binary bag that a bag-of-items model or a TruncatedSVD of the
    user x item matrix reads. The field's table is `dim` wide, or narrower where the
    field has fewer ids; it is separate from the field's input embedding, whose width is
    the model's. Reserved ids (padding, missing, unknown, mask) count for nothing, so
    padding does not change the result. Static shapes (a sort, no unique), so the layer
    compiles with XLA. A schema without a categorical field (only amounts and times, as
    CDNOW's) gets an output of width 0, so one config serves every schema.

    With `weighting="idf"` each held id counts with its inverse document frequency
    instead of 1 (scikit-learn's smoothed `log((1 + N) / (1 + df)) + 1`, N sequences, df
    of them holding the id) and the sum is divided by the weights' L2 norm: a linear map
    of the L2-normalised TF-IDF bag, where rare ids weigh more. The frequencies are
    non-trainable weights (ones until `set_document_frequencies`), saved with the model,
    so serving weighs ids as training did.

    Args:
        features: list of dict. Feature specs (`name`, `kind`, `vocab_size`); the
            `id_fields` of them get a table.
        dim: int. Widest table. Defaults to 128.
        weighting: str. `binary` or `idf`. Defaults to `binary`.

    Returns (from `call`):
        float tensor [B, `output_dim`]: the fields' vectors concatenated (zero for a
        sequence without ids).

    Example:
    ```python
    features = [{"name": "item", "kind": "categorical", "vocab_size": 1000}]
    bag = IdBag(features, dim=32)
    y = bag({"item": ops.array([[7, 9, 7, 0]])})  # [1, 32], from ids 7 and 9
    ```
    """

    def __init__(self, features: list[dict], dim: int = 128, weighting: str = "binary",
                 **kwargs):
        super().__init__(**kwargs)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"ids weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.features = embedding_specs(features)
        self.dim = dim
        self.weighting = weighting
        self._idf = {}
        self._tables = {spec["name"]: keras.layers.Embedding(
            num_ids(spec), min(dim, num_ids(spec) - NUM_RESERVED_IDS),
            name=f"ids_{spec['name']}", dtype=self.dtype_policy)
            for spec in id_fields(self.features)}

    @property
    def field_names(self) -> list[str]:
        """The fields with a table, in output order."""
        return list(self._tables)

    @property
    def output_dim(self) -> int:
        """Width of the output: the sum of the fields' table widths."""
        return sum(table.output_dim for table in self._tables.values())

    def build(self, input_shape):
        for name, table in self._tables.items():
            table.build(None)
            if self.weighting == "idf":
                # float32 under a mixed policy too (no autocast): the weights and their
                # norm are computed in float32, where a float16 sum of squares overflows.
                self._idf[name] = self.add_weight(
                    shape=(table.input_dim,), initializer="ones", trainable=False,
                    name=f"idf_{name}", dtype="float32", autocast=False)

    def set_document_frequencies(self, frequencies: dict, num_sequences: int) -> None:
        """Sets the inverse document frequencies of `weighting="idf"`.

        Args:
            frequencies: dict. Field -> int array [vocab size]: how many sequences hold
                each vocabulary id. Hashed ids past it are not counted: they weigh as ids
                no sequence holds (the rarest), which values outside a vocabulary are.
            num_sequences: int. N, the number of sequences counted.
        """
        if self.weighting != "idf":
            raise ValueError("document frequencies need weighting='idf'")
        for name, weight in self._idf.items():
            df = np.zeros(weight.shape[0], np.float64)
            counted = np.asarray(frequencies.get(name, []), np.float64)[:len(df)]
            df[:len(counted)] = counted
            weight.assign((np.log((1.0 + num_sequences) / (1.0 + df)) + 1.0).astype("float32"))

    def id_weights(self) -> dict:
        """Field -> float32 [vocab size]: the weight of each id (ones for `binary`)."""
        return {name: ops.convert_to_tensor(self._idf[name]) if name in self._idf
                else ops.ones((table.input_dim,), "float32")
                for name, table in self._tables.items()}

    def call(self, inputs, presence=None):
        """The bag's vectors.

        Args:
            inputs: dict. Ids of each field, [B, T] (or [B, T, L] for a multi-valued one).
            presence: dict or None. Field -> float tensor [B, T]: per event, how much its
                ids of that field count (for the paths of integrated gradients): an id is
                held to the extent `1 - prod(1 - presence)` over the events that hold it
                (smooth, and symmetric in them), so 1 everywhere (None, or a field left
                out) is the plain bag and 0 everywhere the empty one. Defaults to None.

        Returns:
            float tensor [B, `output_dim`].
        """
        if not self._tables:
            any_ids = next(iter(inputs.values()))
            return ops.zeros((ops.shape(any_ids)[0], 0), self.compute_dtype)
        out = []
        for name, table in self._tables.items():
            ids = inputs[name]
            flat = ops.reshape(ids, (ops.shape(ids)[0], -1))
            if presence is None or name not in presence:
                ids = ops.sort(flat, axis=-1)
            else:
                order = ops.argsort(flat, axis=-1)
                ids = ops.take_along_axis(flat, order, axis=-1)
            first = ops.concatenate([ops.ones_like(ids[:, :1], dtype="bool"),
                                     ids[:, 1:] != ids[:, :-1]], axis=1)
            weights = ops.cast(first & (ids >= NUM_RESERVED_IDS), "float32")
            if name in self._idf:
                weights = weights * ops.take(self._idf[name], ids)
            norm = ops.sqrt(ops.maximum(ops.sum(ops.square(weights), axis=1, keepdims=True),
                                        1e-12))
            weights = weights / norm
            if presence is not None and name in presence:
                # After the norm of the whole bag: the output is linear in how held each
                # id is, from the empty bag (0) to the plain one.
                weights = weights * _held(presence[name], ops.shape(inputs[name]), order,
                                          first)
            weights = ops.cast(weights, self.compute_dtype)
            out.append(ops.einsum("bn,bnd->bd", weights,
                                  gather_rows(table, ids, self.compute_dtype)))
        return out[0] if len(out) == 1 else ops.concatenate(out, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"features": [dict(spec) for spec in self.features], "dim": self.dim,
                       "weighting": self.weighting})
        return config


def _held(presence, ids_shape, order, first):
    """How held each sorted id is: 1 - prod(1 - presence) over the events holding it.

    Args:
        presence: float [B, T]. Per-event presence.
        ids_shape: shape of the field's ids, [B, T] or [B, T, L].
        order: int [B, N]. The sort order of the flattened ids.
        first: bool [B, N]. True at the first of each run of equal sorted ids.

    Returns:
        float32 [B, N], aligned with the sorted ids (read at each run's first position).
    """
    presence = ops.cast(presence, "float32")
    if len(ids_shape) == 3:
        presence = ops.broadcast_to(presence[:, :, None], ids_shape)
    rows, width = ops.shape(order)[0], ops.shape(order)[1]
    sorted_presence = ops.take_along_axis(ops.reshape(presence, (rows, -1)), order, axis=-1)
    run = ops.cumsum(ops.cast(first, "int32"), axis=1) - 1
    segments = run + ops.arange(rows, dtype="int32")[:, None] * width
    # log(1 - p), with p below 1 so that the gradient stays finite: a fully present id
    # is held to 1 - 1e-6 per event (the plain bag, with presence None, holds it to 1).
    absent = ops.log1p(-ops.minimum(sorted_presence, 1.0 - 1e-6))
    totals = ops.segment_sum(ops.reshape(absent, (-1,)), ops.reshape(segments, (-1,)),
                             num_segments=rows * width)
    return 1.0 - ops.exp(ops.take(totals, segments))
