"""The position-wise feed-forward sub-layer shared by both block types."""

from __future__ import annotations

import keras

FFN_ACTIVATIONS = ("relu", "gelu")


def feed_forward(width: int, ffn_dim: int, activation: str = "relu", dtype=None,
                 name: str = "ffn") -> keras.Sequential:
    """Dense(ffn_dim, activation) then Dense(width), applied to every step.

    Args:
        width: int. Input and output width D.
        ffn_dim: int. Hidden width.
        activation: str. `relu` or `gelu`. ReLU's gradient needs only its output, which the
            second Dense keeps anyway; GELU also keeps its input and costs more passes.
            Defaults to `relu`.
        dtype: dtype policy of the layers.
        name: str. Name of the Sequential.

    Returns:
        An unbuilt `keras.Sequential`.
    """
    if activation not in FFN_ACTIVATIONS:
        raise ValueError(f"ffn activation must be one of {FFN_ACTIVATIONS}, got {activation!r}")
    return keras.Sequential([keras.layers.Dense(ffn_dim, activation=activation, dtype=dtype),
                             keras.layers.Dense(width, dtype=dtype)], name=name)
