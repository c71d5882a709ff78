"""Schema, row parsing, the SequenceExample format, artifacts and the TFRecord reader."""

from autorisk_tf.data.artifacts import Artifacts
from autorisk_tf.data.schema import Schema, SchemaError, load_schema, parse_schema

__all__ = ["Artifacts", "Schema", "SchemaError", "load_schema", "parse_schema"]
