"""Fine-tunes a pre-trained encoder with a classification head on one label column.

  python -m autorisk_tf.finetune --model_dir runs/x --data out/ --label is_risk \
      --output_dir runs/x_is_risk [--freeze_encoder] [--epochs 5] [--max_train_labels 500]

Trains on the train split's sequences that have the label, reports validation AUC each epoch,
and writes `classifier.keras` (raw events in, probabilities out) and `metrics.json`.
`--from_scratch` trains the same architecture from random weights (the supervised baseline).
"""

from __future__ import annotations

import json
import sys

import keras
import tensorflow as tf
from absl import app, flags

from autorisk_tf.cli import require_flags
from autorisk_tf.contract import PACKAGE
from autorisk_tf.data import fileio, pipeline, reader
from autorisk_tf.data import sequence_example as seqex
from autorisk_tf.data.schema import Schema

FLAGS = flags.FLAGS

# Adam learning rates of fine-tuning: from scratch, and from pre-trained weights with a
# probed head (LP-FT's gentler second stage). With 1e-3 for both, the pre-trained runs lost
# to the runs from scratch at 300 labels on every real-data task; with 1e-4 they won at 100
# and 300 on all three, for each of three pre-training seeds (seed 0 with real.yaml's earlier
# bag loss; `benchmarks/real_data_bench.py`, docs/results.md).
LEARNING_RATE = 1e-3
PRETRAINED_LEARNING_RATE = 1e-4


def copy_embedder(embedder, pretrained: bool, seed: int):
    """A fresh copy of an embedder: its weights (pretrained) or new ones drawn from seed."""
    if not pretrained:
        keras.utils.set_random_seed(seed)
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(embedder))
    if pretrained:
        copy.set_weights(embedder.get_weights())
    return copy


@keras.saving.register_keras_serializable(package=PACKAGE)
class SequenceClassifier(keras.Model):
    """A SequenceEmbedder, a layer norm and a dense head: raw events in, probabilities out.

    Args:
        embedder: SequenceEmbedder. Raw events to embeddings.
        classes: list of str or None. Class names of a categorical label; None for a binary
            label (one sigmoid output).
        dropout: float. Dropout on the embedding. Defaults to 0.1.
    """

    def __init__(self, embedder, classes: list[str] | None = None, dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.embedder = embedder
        self.classes = list(classes) if classes else None
        self.dropout = dropout
        self.norm = keras.layers.LayerNormalization(name="norm", dtype="float32")
        self.drop = keras.layers.Dropout(dropout)
        self.head = keras.layers.Dense(len(self.classes) if self.classes else 1,
                                       activation="softmax" if self.classes else "sigmoid",
                                       name="head", dtype="float32")

    def build(self, input_shape=None):
        if not self.embedder.built:
            self.embedder.build()
        shape = (None, self.embedder.encoder.embedding_dim)
        self.norm.build(shape)
        self.head.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        embedding = self.embedder(inputs, training=training)["embedding"]
        embedding = self.norm(keras.ops.cast(embedding, "float32"))
        return self.head(self.drop(embedding, training=training))

    def get_config(self):
        return {"name": self.name, "classes": self.classes, "dropout": self.dropout,
                "embedder": keras.saving.serialize_keras_object(self.embedder)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["embedder"] = keras.saving.deserialize_keras_object(config["embedder"])
        return cls(**config)


def label_kind(schema: Schema, label: str) -> str:
    """The kind of a label column, with a clear error for an unknown one."""
    kinds = {column.name: column.kind for column in schema.labels}
    if label not in kinds:
        raise ValueError(f"unknown label {label!r}; the schema has {sorted(kinds) or 'none'}")
    if kinds[label] == "numeric":
        raise ValueError(f"label {label!r} is numeric: fine-tuning needs binary or categorical")
    return kinds[label]


def labelled_batches(file_pattern: str, schema: Schema, label: str, classes, batch_size: int,
                     training: bool, seed: int, max_labels: int | None = None,
                     keys: list[str] | None = None):
    """(raw inputs, label index) batches of the sequences that have the label.

    `keys`, when given, keeps only the sequences of those keys (such as one fold of a
    cross-validation).
    """
    feature = seqex.label_feature(label)
    config = pipeline.InputConfig(batch_size=batch_size, seed=seed)
    examples = reader.examples(file_pattern, schema)
    if keys is not None:
        wanted = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(keys), tf.string), tf.ones(len(keys), tf.int64)), 0)
        examples = examples.filter(lambda ex: wanted.lookup(ex[seqex.KEY]) > 0)
    if classes is None:
        examples = examples.filter(lambda ex: ~tf.math.is_nan(ex[feature]))
        to_target = lambda ex: tf.cast(ex[feature] > 0.5, tf.float32)[None]  # noqa: E731
    else:
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(classes), tf.range(len(classes), dtype=tf.int64)), -1)
        examples = examples.filter(lambda ex: table.lookup(ex[feature]) >= 0)
        to_target = lambda ex: table.lookup(ex[feature])  # noqa: E731
    if max_labels:
        examples = examples.take(max_labels)
    if training:
        examples = examples.cache().shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    examples = examples.map(lambda ex: (ex, to_target(ex)))
    sizes = [batch_size] * (len(config.bucket_boundaries) + 1)
    return examples.bucket_by_sequence_length(
        lambda ex, _: tf.cast(ex[seqex.LENGTH], tf.int32), list(config.bucket_boundaries),
        sizes).prefetch(tf.data.AUTOTUNE)


def class_names(file_pattern: str, schema: Schema, label: str) -> list[str]:
    """Sorted distinct non-empty values of a categorical label on some shards."""
    feature = seqex.label_feature(label)
    values = set()
    for batch in reader.examples(file_pattern, schema).map(lambda ex: ex[feature]).batch(1024):
        values.update(v.decode("utf-8") for v in batch.numpy())
    values.discard("")
    return sorted(values)


def finetune(embedder, data: str, schema: Schema, label: str, epochs: int = 5,
             batch_size: int = 32, learning_rate: float = LEARNING_RATE,
             freeze_encoder: bool = False,
             max_train_labels: int | None = None, seed: int = 0, verbose: int = 1,
             train_keys: list[str] | None = None, valid_keys: list[str] | None = None,
             train_split: str = "train", valid_split: str = "valid",
             validation_freq: int = 1, probe: bool = False,
             freeze_tables: bool = False,
             probe_c: float | None = 0.1) -> tuple[SequenceClassifier, dict]:
    """Trains a classifier head (and the encoder unless frozen) on one label.

    Args:
        embedder: SequenceEmbedder. Pre-trained (or freshly initialised) embedder.
        data: str. Output folder of beam.preprocess.
        schema: Schema. Its label columns name the label's kind.
        label: str. Label column (binary or categorical).
        epochs: int. Passes over the labelled training sequences.
        batch_size: int. Sequences per batch.
        learning_rate: float. Adam learning rate.
        freeze_encoder: bool. Train the head only.
        max_train_labels: int or None. Use only the first N labelled training sequences.
        seed: int. Seed of weights and shuffling.
        verbose: int. 0 quiet; otherwise a progress bar on a terminal, one line per epoch
            elsewhere.
        train_keys: list of str or None. Train only on these keys of the training split.
        valid_keys: list of str or None. Validate only on these keys of the validation split.
        train_split: str. Split trained on. Defaults to `train`.
        valid_split: str. Split validated on. Defaults to `valid`.
        validation_freq: int. Validate every this many epochs (and after the last).
            Defaults to 1.
        probe: bool. Start the head from a logistic regression on the encoder's embeddings
            of the training rows (`probe_head`; linear probing, then fine-tuning), not from
            random weights. Defaults to False.
        freeze_tables: bool. Keep the embedding tables (`embedding_tables`) as they are and
            train the rest of the encoder: with few labelled users, training would move
            only the rows of the ids they touched. Defaults to False.
        probe_c: float or None. C of the probe's regression (`probe_head`); None: chosen
            by inner CV on the training rows. Defaults to 0.1.

    Returns:
        `(classifier, metrics)` with `valid_auc` (macro one-vs-rest for categorical labels)
        and `train_labels`.
    """
    keras.utils.set_random_seed(seed)
    kind = label_kind(schema, label)
    train = fileio.join(data, train_split, "*.tfrecord")
    valid = fileio.join(data, valid_split, "*.tfrecord")
    classes = class_names(train, schema, label) if kind == "categorical" else None
    model = SequenceClassifier(embedder, classes, name="sequence_classifier")
    model.build()
    embedder.trainable = not freeze_encoder
    if freeze_tables:
        for table in embedding_tables(embedder):
            table.trainable = False
    train_data = labelled_batches(train, schema, label, classes, batch_size, True, seed,
                                  max_train_labels, train_keys)
    valid_data = labelled_batches(valid, schema, label, classes, batch_size, False, seed,
                                  keys=valid_keys)
    if probe:
        probe_head(model, labelled_batches(train, schema, label, classes, batch_size, False,
                                           seed, max_train_labels, train_keys), probe_c)
    count = int(sum(int(tf.shape(y)[0]) for _, y in train_data))
    for split, rows in ((train_split, count), (valid_split, sum(1 for _ in valid_data))):
        if not rows:
            raise ValueError(f"no user of the {split} split of {data} has label {label!r} "
                             f"(see labels.rows_used in artifacts/stats.json)")
    compile_classifier(model, learning_rate)
    # A progress bar on a terminal; one line per epoch in a log file (no carriage returns).
    verbose = 1 if verbose and sys.stdout.isatty() else (2 if verbose else 0)
    history = model.fit(train_data, validation_data=valid_data, epochs=epochs, verbose=verbose,
                        validation_freq=[e for e in range(1, epochs + 1)
                                         if e % validation_freq == 0 or e == epochs])
    return model, {"valid_auc": float(history.history["val_auc"][-1]),
                   "valid_auc_by_epoch": [float(v) for v in history.history["val_auc"]],
                   "train_labels": count}


def probe_head(model: SequenceClassifier, batches, c: float | None = 0.1) -> None:
    """Sets a classifier's head to a logistic regression on the frozen embeddings.

    The first step of linear probing then fine-tuning (LP-FT; Kumar et al., "Fine-Tuning
    can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022): with
    a random head, the first fine-tuning steps send large, arbitrary gradients into a
    pre-trained encoder before the head is any good. Resets the layer norm to identity (its
    initial weights) and fits the head with scikit-learn on the normalised embeddings,
    dropout off: a binary regression for a sigmoid head, a multinomial one for a softmax
    head (classes missing from the rows keep zero weights and a large negative bias).

    Args:
        model: SequenceClassifier. A built classifier.
        batches: tf.data.Dataset. `(raw inputs, label)` batches of the training rows: label
            [b, 1] float for a binary head, [b] class indices for a categorical one.
        c: float or None. Inverse L2 strength of the regression; None: chosen among
            `evaluate.C_GRID` by AUC in an inner stratified CV of the rows
            (`evaluate.tuned_logistic_regression`, up to 5 folds, as many as the rarer
            class has rows), for a binary label with at least 2 rows of each class;
            otherwise 0.1. Defaults to 0.1.
    """
    import numpy as np

    from autorisk_tf.evaluate import logistic_regression, tuned_logistic_regression

    model.norm.gamma.assign(np.ones(model.norm.gamma.shape, "float32"))
    model.norm.beta.assign(np.zeros(model.norm.beta.shape, "float32"))
    xs, ys = [], []
    for inputs, y in batches:
        embedding = model.embedder(inputs, training=False)["embedding"]
        xs.append(np.asarray(model.norm(keras.ops.cast(embedding, "float32"))))
        ys.append(np.asarray(y).reshape(-1).astype(int))
    x, y = np.concatenate(xs), np.concatenate(ys)
    outputs = model.head.kernel.shape[1]
    kernel = np.zeros((x.shape[1], outputs), "float32")
    bias = np.zeros(outputs, "float32")
    seen = np.unique(y)
    if len(seen) > 1:
        folds = min(5, int(np.bincount(y)[seen].min()))
        if c is None and len(seen) == 2 and folds >= 2:
            regression = tuned_logistic_regression(standardise=False, folds=folds).fit(x, y)
        else:
            regression = logistic_regression(0.1 if c is None else c,
                                             standardise=False).fit(x, y)
        if outputs == 1:
            kernel[:, 0], bias[0] = regression.coef_[0], regression.intercept_[0]
        else:
            bias[:] = -1e4
            if len(seen) == 2:  # one coefficient vector: the log-odds of the second class
                kernel[:, seen[1]], bias[seen] = regression.coef_[0], [0.0, regression.
                                                                        intercept_[0]]
            else:
                kernel[:, seen], bias[seen] = regression.coef_.T, regression.intercept_
    model.head.kernel.assign(kernel)
    model.head.bias.assign(bias)


def embedding_tables(layer: keras.layers.Layer) -> list[keras.layers.Embedding]:
    """Every embedding table under a layer (field values, buckets, time features, ids)."""
    return [sub for sub in layer._flatten_layers() if isinstance(sub, keras.layers.Embedding)]


def compile_classifier(model: SequenceClassifier, learning_rate: float) -> None:
    """Compiles with Adam, the label's cross-entropy and an `auc` metric.

    The metric is the macro one-vs-rest AUC for categorical labels.
    """
    if model.classes:
        loss, auc = "sparse_categorical_crossentropy", _MacroAUC(len(model.classes), name="auc")
    else:
        loss, auc = "binary_crossentropy", keras.metrics.AUC(name="auc")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[auc])


class _MacroAUC(keras.metrics.AUC):
    """One-vs-rest AUC averaged over classes, for integer targets and softmax outputs."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(multi_label=True, num_labels=num_classes, **kwargs)
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), self.num_classes)
        return super().update_state(y_true, y_pred, sample_weight)


def define_flags() -> None:
    """Defines the command-line flags.

    Called only when the module runs as a script, so that importing it next to other
    tools never defines a flag twice.
    """
    flags.DEFINE_string("model_dir", None, "Pre-training output folder (holds encoder.keras).")
    flags.DEFINE_string("data", None, "Output folder of beam.preprocess.")
    flags.DEFINE_string("label", None, "Label column to predict (binary or categorical).")
    flags.DEFINE_string("output_dir", None, "Where classifier.keras and metrics.json go.")
    flags.DEFINE_integer("epochs", 5, "Passes over the labelled training sequences.")
    flags.DEFINE_integer("batch_size", 32, "Sequences per batch.")
    flags.DEFINE_float("learning_rate", None, "Adam learning rate; default "
                       f"{PRETRAINED_LEARNING_RATE:g} for a pre-trained encoder, "
                       f"{LEARNING_RATE:g} with --from_scratch (chosen on the "
                       "real-data tasks: docs/results.md).")
    flags.DEFINE_bool("freeze_encoder", False, "Train the head only.")
    flags.DEFINE_bool("from_scratch", False, "Re-initialise the encoder (supervised baseline).")
    flags.DEFINE_bool("probe_head", True, "Start the head from a logistic regression on the "
                      "pre-trained embeddings, then fine-tune (LP-FT); off with "
                      "--from_scratch.")
    flags.DEFINE_bool("freeze_tables", True, "Keep the pre-trained embedding tables and "
                      "fine-tune the rest of the encoder (with few labelled users, training "
                      "would move only the rows of their ids); off with --from_scratch.")
    flags.DEFINE_float("probe_c", None, "C of the probe's logistic regression; default: "
                       "chosen by AUC in an inner 5-fold CV of the training rows (binary "
                       "labels; 0.1 for categorical ones).")
    flags.DEFINE_integer("max_train_labels", None, "Use only the first N labelled sequences.")
    flags.DEFINE_integer("seed", 0, "Seed of weights and shuffling.")


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    require_flags("model_dir", "data", "label", "output_dir")
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.embed import load_embedder

    fileio.split_patterns_or_exit(FLAGS.data, ("train", "valid"))
    try:
        schema = Artifacts.load(fileio.join(FLAGS.data, "artifacts")).schema
        label_kind(schema, FLAGS.label)
        embedder = load_embedder(FLAGS.model_dir)
    except (ValueError, FileNotFoundError, OSError) as e:
        sys.exit(f"error: {e}")
    if FLAGS.from_scratch:
        embedder = copy_embedder(embedder, pretrained=False, seed=FLAGS.seed)
    learning_rate = FLAGS.learning_rate
    if learning_rate is None:
        learning_rate = (LEARNING_RATE if FLAGS.from_scratch
                         else PRETRAINED_LEARNING_RATE)
    try:
        model, metrics = finetune(
            embedder, FLAGS.data, schema, FLAGS.label, FLAGS.epochs, FLAGS.batch_size,
            learning_rate, FLAGS.freeze_encoder, FLAGS.max_train_labels, FLAGS.seed,
            probe=FLAGS.probe_head and not FLAGS.from_scratch,
            freeze_tables=FLAGS.freeze_tables and not FLAGS.from_scratch,
            probe_c=FLAGS.probe_c)
    except ValueError as e:
        sys.exit(f"error: {e}")
    tf.io.gfile.makedirs(FLAGS.output_dir)
    model.save(fileio.join(FLAGS.output_dir, "classifier.keras"))
    fileio.write_text(fileio.join(FLAGS.output_dir, "metrics.json"),
                      json.dumps(metrics, indent=1) + "\n")
    print(f"{FLAGS.label}: validation AUC {metrics['valid_auc']:.4f} "
          f"({metrics['train_labels']} training labels)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
