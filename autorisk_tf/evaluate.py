"""Downstream evaluation: logistic regression on embeddings, AUC on the test split.

  python -m autorisk_tf.evaluate --data out/ --model_dir runs/x --model_dir runs/random \
      [--labels is_risk,takeover] [--json report.json]

For each model folder (holding `encoder.keras`) and each binary label: embed the train and
test splits, fit a standardised logistic regression on train, report test AUC. Prints a
Markdown table.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

from autorisk_tf.data import fileio

FLAGS = flags.FLAGS


def lr_auc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
           test_y: np.ndarray) -> float:
    """Test AUC of a standardised logistic regression fitted on the training rows.

    Args:
        train_x: float [N, E]. Training embeddings.
        train_y: [N]. Binary training labels (NaN rows are dropped).
        test_x: float [M, E]. Test embeddings.
        test_y: [M]. Binary test labels (NaN rows are dropped).

    Returns:
        The test ROC AUC.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keep_train, keep_test = ~np.isnan(train_y), ~np.isnan(test_y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    model.fit(train_x[keep_train], train_y[keep_train].astype(int))
    scores = model.predict_proba(test_x[keep_test])[:, 1]
    return float(roc_auc_score(test_y[keep_test].astype(int), scores))


def downstream_table(data: str, model_dirs: list[str], labels: list[str]) -> dict:
    """LR test AUC of every (model folder, label) pair.

    Args:
        data: str. Output folder of beam.preprocess.
        model_dirs: list of str. Folders holding `encoder.keras`.
        labels: list of str. Binary label columns.

    Returns:
        `{model_dir: {label: auc}}`.
    """
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.embed import embed, load_embedder

    schema = Artifacts.load(fileio.join(data, "artifacts")).schema
    kinds = {label.name: label.kind for label in schema.labels}
    for label in labels:
        if kinds.get(label) != "binary":
            raise ValueError(f"label {label!r} is not a binary label of the schema "
                             f"({sorted(k for k, v in kinds.items() if v == 'binary')})")
    report = {}
    for model_dir in model_dirs:
        embedder = load_embedder(model_dir)
        _, train_x, train_labels = embed(embedder, fileio.join(data, "train", "*.tfrecord"),
                                         schema)
        _, test_x, test_labels = embed(embedder, fileio.join(data, "test", "*.tfrecord"),
                                       schema)
        report[model_dir] = {label: lr_auc(train_x, train_labels[label].astype(float),
                                           test_x, test_labels[label].astype(float))
                             for label in labels}
    return report


def define_flags() -> None:
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("data", None, "Output folder of beam.preprocess.")
    flags.DEFINE_multi_string("model_dir", [], "Folder holding encoder.keras (repeatable).")
    flags.DEFINE_list("labels", ["is_risk"], "Binary label columns.")
    flags.DEFINE_string("json", None, "Also write the report here.")


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    if not FLAGS.data or not FLAGS.model_dir:
        sys.exit("error: --data and at least one --model_dir are required")
    try:
        report = downstream_table(FLAGS.data, FLAGS.model_dir, FLAGS.labels)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print("| embeddings from | " + " | ".join(f"{label} AUC" for label in FLAGS.labels) + " |")
    print("|---|" + "---:|" * len(FLAGS.labels))
    for model_dir, aucs in report.items():
        cells = " | ".join(f"{aucs[label]:.3f}" for label in FLAGS.labels)
        print(f"| {os.path.basename(os.path.normpath(model_dir))} | {cells} |")
    if FLAGS.json:
        fileio.write_text(FLAGS.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
