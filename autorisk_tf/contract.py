"""The names every stage agrees on: splits, signatures, the Keras registration package.

The Beam jobs, training, export and serving import these from here, so the library depends
on none of them: `beam/` and `export/` import `autorisk_tf`, never the other way round, and
`beam/` does not import `export/` (`tests/test_imports.py` checks both).
"""

# The splits `beam.preprocess` writes, each a folder of TFRecord shards.
SPLITS = ("train", "valid", "test")
# The package every Keras layer and model of AutoRisk-TF is registered under.
PACKAGE = "autorisk_tf"
# SavedModel signatures: raw per-field events in, and serialized SequenceExamples in.
SERVING_DEFAULT = "serving_default"
EMBED_EXAMPLES = "embed_examples"
# With a classifier: raw events in, the score and each event's share of it out
# (`autorisk_tf.explain`).
EXPLAIN = "explain"
# The input of `EMBED_EXAMPLES`: a vector of serialized SequenceExamples.
EXAMPLES_INPUT = "examples"
# In a SavedModel version folder: the schema its signatures were built from (TF Serving
# ignores it; export.serve checks raw values by its rules, as beam.preprocess does).
SCHEMA_ASSET = "assets.extra/schema.yaml"
# The model's fingerprint (`embed.model_fingerprint` of the run it was exported from), in a
# SavedModel version folder and in the metadata of every embeddings Parquet file: a
# similar-user index built from one model refuses queries embedded by another.
FINGERPRINT_ASSET = "assets.extra/model_fingerprint"
FINGERPRINT_METADATA = b"autorisk.model"
# The embedding's parts (`SequenceEncoder.pooling_dims` as JSON `[[name, width], ...]`, in
# order), beside the fingerprint: a similar-user index weighs every part alike
# (`neighbours.balance_parts`) instead of letting the widest-spread part decide.
PARTS_ASSET = "assets.extra/embedding_parts.json"
PARTS_METADATA = b"autorisk.parts"
# The files of a training run folder (`--model_dir`), read by embed, finetune and export.
ENCODER_FILE = "encoder.keras"
CONFIG_FILE = "config.json"
SCHEMA_FILE = "schema.yaml"
PREPROCESSING_FILE = "preprocessing.json"  # `data.artifacts.PreprocessingOptions`
