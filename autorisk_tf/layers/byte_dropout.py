"""Dropout that draws one random byte per element instead of one random float."""

from __future__ import annotations

import keras
from keras import ops

from autorisk_tf.contract import PACKAGE

_LEVELS = 256


@keras.saving.register_keras_serializable(package=PACKAGE)
class ByteDropout(keras.layers.Layer):
    """Inverted dropout whose keep decisions come from random bytes.

    `keras.layers.Dropout` draws one random float per element; on CPU that random number
    generation costs more than the rest of the layer. Here each random 32-bit integer
    decides four elements (one byte each), so a quarter of the numbers are drawn. The rate
    is rounded to a multiple of 1/256 (`effective_rate`) and kept elements are scaled by
    1 / (1 - effective_rate), so the expected output equals the input exactly.

    Args:
        rate: float in [0, 1). Fraction of elements to drop.
        seed: int or None. Seed of the layer's random stream.

    Example:
    ```python
    dropout = ByteDropout(0.1, seed=1)
    y = dropout(ops.ones((2, 1000)), training=True)  # about 10% zeros, the rest 256/230
    ```
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed
        self.threshold = round(rate * _LEVELS)
        self.seed_generator = keras.random.SeedGenerator(seed) if self.threshold else None
        self.supports_masking = True
        self.built = True

    @property
    def effective_rate(self) -> float:
        """The rate actually applied: `rate` rounded to a multiple of 1/256."""
        return self.threshold / _LEVELS

    def call(self, inputs, training=False):
        if not training or not self.threshold:
            return inputs
        size = ops.size(inputs)
        # [n, 1] int32 viewed as [n, 4] uint8 (a static last axis, so it traces with any shape).
        words = keras.random.randint(((size + 3) // 4, 1), minval=-(2**31), maxval=2**31 - 1,
                                     dtype="int32", seed=self.seed_generator)
        random_bytes = ops.reshape(ops.view(words, "uint8"), (-1,))[:size]
        keep = ops.reshape(random_bytes >= self.threshold, ops.shape(inputs))
        scale = ops.cast(_LEVELS / (_LEVELS - self.threshold), inputs.dtype)
        return ops.where(keep, inputs * scale, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
