"""Raw parsed events in, one embedding per sequence out: the model that is exported."""

from __future__ import annotations

import keras

from autorisk_tf.contract import PACKAGE
from autorisk_tf.layers.event_preprocessor import EventPreprocessor
from autorisk_tf.layers.sequence_encoder import SequenceEncoder


@keras.saving.register_keras_serializable(package=PACKAGE)
class SequenceEmbedder(keras.Model):
    """EventPreprocessor (raw values to ids) followed by a SequenceEncoder.

    Training writes it as `encoder.keras`; embedding, fine-tuning and export load it, so
    every stage maps raw values to ids with the same layer.

    Args:
        preprocessor: EventPreprocessor. Raw values to ids.
        encoder: SequenceEncoder. Ids to per-step outputs and the sequence embedding.

    Returns (from `call`):
        The encoder's dict: `sequence`, `embedding`, `padding_mask`.

    Example:
    ```python
    embedder = keras.models.load_model("runs/x/encoder.keras")
    vectors = embedder(reader.parse_batch(serialized, schema))["embedding"]
    ```
    """

    def __init__(self, preprocessor: EventPreprocessor, encoder: SequenceEncoder, **kwargs):
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.encoder = encoder

    def build(self, input_shape=None):
        for layer in (self.preprocessor, self.encoder):
            if not layer.built:
                layer.build(None)
        self.built = True

    def call(self, inputs, training=None):
        return self.encoder(self.preprocessor(inputs), training=training)

    def get_config(self):
        return {"name": self.name,
                "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "encoder": keras.saving.serialize_keras_object(self.encoder)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("preprocessor", "encoder"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
