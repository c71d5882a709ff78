"""Which model made an embedding, and its parts: facts that travel with its outputs."""

from __future__ import annotations

import json

from autorisk_tf.contract import ENCODER_FILE, FINGERPRINT_ASSET, PARTS_ASSET
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


def embedding_parts(embedder) -> list[list]:
    """The parts of a `SequenceEmbedder`'s embedding: `[[name, width], ...]`, in order."""
    return [[name, int(width)] for name, width in embedder.encoder.pooling_dims.items()]


def parts_text(parts: list[list] | None) -> str:
    """Parts as the JSON stored in Parquet metadata and SavedModels ("" for unknown)."""
    return json.dumps(parts) if parts else ""


def read_parts(text: str | bytes) -> list[list] | None:
    """Parts from `parts_text`'s JSON (None for "": files written before parts were kept).

    Raises:
        ValueError: the text is not a list of `[name, width]` pairs.
    """
    if not text:
        return None
    parts = json.loads(text)
    if not isinstance(parts, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[1], int) for p in parts):
        raise ValueError(f"embedding parts must be [[name, width], ...], got {text!r}")
    return parts


def saved_model_parts(version_dir: str) -> list[list] | None:
    """The embedding parts a SavedModel version folder carries (None for older exports)."""
    path = fileio.join(version_dir, PARTS_ASSET)
    return read_parts(fileio.read_text(path).strip()) if fileio.exists(path) else None
