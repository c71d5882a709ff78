"""Which model made an embedding: a fingerprint that travels with its outputs."""

from __future__ import annotations

from autorisk_tf.contract import ENCODER_FILE, FINGERPRINT_ASSET
from autorisk_tf.data import fileio
from autorisk_tf.data.output_folder import sha256_of


def model_fingerprint(model_dir: str) -> str:
    """The fingerprint of a training run's encoder: the SHA-256 of `encoder.keras`, 16 hex.

    It names the model version that made an embedding: `export.savedmodel` copies it into
    the SavedModel (`contract.FINGERPRINT_ASSET`), embedding files carry it in their
    metadata, and a similar-user index refuses vectors of another model.
    """
    return sha256_of(fileio.join(model_dir, ENCODER_FILE))[:16]


def saved_model_fingerprint(version_dir: str) -> str:
    """The fingerprint a SavedModel version folder carries ("" for older exports)."""
    path = fileio.join(version_dir, FINGERPRINT_ASSET)
    return fileio.read_text(path).strip() if fileio.exists(path) else ""
