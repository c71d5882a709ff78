import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from autorisk_tf.finetune import finetune, label_kind
from tests.probing import normed_embeddings, probe_auc, risk_labels, split_train_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy(embedder):
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(embedder))
    clone.build()
    clone.set_weights(embedder.get_weights())
    return clone


def test_frozen_pretrained_encoder_learns_a_binary_label(pretrained, pretraining_data):
    trainer, untrained = pretrained
    embedder = _copy(trainer.embedder())
    before = [np.array(w) for w in embedder.encoder.weights]
    # one epoch from a random head is enough for both floors below
    options = {"epochs": 1, "learning_rate": 1e-2, "freeze_encoder": True, "verbose": 0}
    model, metrics = finetune(embedder, pretraining_data, trainer.artifacts.schema,
                              "is_risk", **options)
    _, random_metrics = finetune(_copy(untrained), pretraining_data,
                                 trainer.artifacts.schema, "is_risk", **options)
    assert metrics["valid_auc"] > 0.8, metrics
    assert metrics["valid_auc"] > random_metrics["valid_auc"] + 0.03, random_metrics
    # every simulated user has a label: all training sequences are used
    assert metrics["train_labels"] == trainer.artifacts.stats["users_by_split"]["train"]
    for a, b in zip(before, embedder.encoder.weights, strict=True):
        np.testing.assert_array_equal(a, np.array(b))  # frozen
    probabilities = model.predict(next(iter(_raw(pretraining_data, trainer))), verbose=0)
    assert probabilities.shape[1] == 1 and np.all((probabilities >= 0) & (probabilities <= 1))


def _raw(data, trainer):
    from autorisk_tf.data import reader

    return reader.make_dataset(f"{data}/valid/*.tfrecord", trainer.artifacts.schema, 16)


def test_categorical_label_and_few_labels(pretrained, pretraining_data):
    trainer, _ = pretrained
    model, metrics = finetune(_copy(trainer.embedder()), pretraining_data,
                              trainer.artifacts.schema, "profile", epochs=1,
                              max_train_labels=200, verbose=0, probe=True)
    assert metrics["train_labels"] == 200
    assert model.classes == sorted(model.classes) and len(model.classes) == 4
    assert metrics["valid_auc"] > 0.6, metrics


def test_unknown_label_is_a_clear_error(pretrained, pretraining_data, tmp_path):
    trainer, _ = pretrained
    with pytest.raises(ValueError, match="unknown label 'fraud'"):
        label_kind(trainer.artifacts.schema, "fraud")
    out = subprocess.run([sys.executable, "-m", "autorisk_tf.finetune", "--model_dir",
                          str(tmp_path), "--data", pretraining_data, "--label", "is_risk",
                          "--output_dir", str(tmp_path / "ft")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    assert "encoder.keras not found" in out.stderr.splitlines()[-1]


def test_keys_restrict_training_and_validation_rows_and_the_probe_starts_the_head(
        pretrained, pretraining_data):
    trainer, _ = pretrained
    train_keys, valid_keys = split_train_keys(trainer, pretraining_data)
    # a zero learning rate keeps the starting weights: the validation AUC is the probe's
    model, metrics = finetune(_copy(trainer.embedder()), pretraining_data,
                              trainer.artifacts.schema, "is_risk", epochs=2, learning_rate=0.0,
                              verbose=0, train_keys=train_keys, valid_keys=valid_keys,
                              valid_split="train", validation_freq=2, probe=True)
    assert metrics["train_labels"] == 200
    assert len(metrics["valid_auc_by_epoch"]) == 1  # validated after the last epoch only
    expected = probe_auc(model, trainer, pretraining_data, train_keys, valid_keys)
    assert expected > 0.75
    assert abs(metrics["valid_auc"] - expected) < 0.01, (metrics, expected)


@pytest.mark.parametrize("label", ["is_risk", "profile"])
def test_probed_head_is_the_logistic_regression_of_the_embeddings(label, pretrained,
                                                                   pretraining_data):
    from sklearn.metrics import roc_auc_score

    from autorisk_tf.evaluate import logistic_regression
    from autorisk_tf.finetune import (
        SequenceClassifier,
        class_names,
        labelled_batches,
        probe_head,
    )

    trainer, _ = pretrained
    schema = trainer.artifacts.schema
    train = f"{pretraining_data}/train/*.tfrecord"
    classes = class_names(train, schema, label) if label == "profile" else None
    model = SequenceClassifier(_copy(trainer.embedder()), classes)
    model.build()
    batches = labelled_batches(train, schema, label, classes, 64, False, 0, max_labels=300)
    probe_head(model, batches)
    x, y = normed_embeddings(model, batches)
    expected = logistic_regression(0.1, standardise=False).fit(x, y).predict_proba(x)
    got = np.concatenate([np.asarray(model(inputs, training=False)) for inputs, _ in batches])
    if classes is None:
        np.testing.assert_allclose(got[:, 0], expected[:, 1], atol=1e-4)
        valid = labelled_batches(f"{pretraining_data}/valid/*.tfrecord", schema, label, None,
                                 64, False, 0)
        scores = np.concatenate([np.asarray(model(i, training=False))[:, 0] for i, _ in valid])
        truth = np.concatenate([np.asarray(t)[:, 0] for _, t in valid])
        assert roc_auc_score(truth, scores) > 0.8  # a useful head before any fine-tuning
    else:
        seen = np.unique(y).astype(int)
        np.testing.assert_allclose(got[:, seen], expected, atol=1e-4)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_probe_c_chosen_by_inner_cv_and_its_fallback_with_one_positive(pretrained,
                                                                       pretraining_data):
    from autorisk_tf.evaluate import logistic_regression, tuned_logistic_regression
    from autorisk_tf.finetune import SequenceClassifier, labelled_batches, probe_head

    trainer, _ = pretrained
    schema = trainer.artifacts.schema
    train = f"{pretraining_data}/train/*.tfrecord"
    model = SequenceClassifier(_copy(trainer.embedder()))
    model.build()

    def probed(batches):
        probe_head(model, batches, c=None)
        return np.concatenate([np.asarray(model(i, training=False))[:, 0] for i, _ in batches])

    batches = labelled_batches(train, schema, "is_risk", None, 64, False, 0, max_labels=300)
    x, y = normed_embeddings(model, batches)
    tuned = tuned_logistic_regression(standardise=False, folds=5).fit(x, y)
    np.testing.assert_allclose(probed(batches), tuned.predict_proba(x)[:, 1], atol=1e-4)
    # one positive row cannot be split into folds: the fixed C 0.1 serves
    labels = risk_labels(trainer, pretraining_data)
    keys = ([next(k for k, v in labels.items() if v)]
            + [k for k, v in labels.items() if not v][:30])
    batches = labelled_batches(train, schema, "is_risk", None, 64, False, 0, keys=keys)
    x, y = normed_embeddings(model, batches)
    assert y.sum() == 1
    fixed = logistic_regression(0.1, standardise=False).fit(x, y)
    np.testing.assert_allclose(probed(batches), fixed.predict_proba(x)[:, 1], atol=1e-4)


def test_frozen_tables_stay_as_pretrained_while_the_rest_of_the_encoder_trains(
        pretrained, pretraining_data):
    from autorisk_tf.finetune import embedding_tables

    trainer, _ = pretrained
    embedder = _copy(trainer.embedder())
    tables = [w for layer in embedding_tables(embedder) for w in layer.weights]
    table_ids = {id(w) for w in tables}
    rest = [w for w in embedder.weights if id(w) not in table_ids and w.trainable]
    before_tables, before_rest = [np.array(w) for w in tables], [np.array(w) for w in rest]
    assert len(tables) >= 3 and rest  # the schema's field tables, time features, ...
    finetune(embedder, pretraining_data, trainer.artifacts.schema, "is_risk", epochs=1,
             learning_rate=1e-3, max_train_labels=200, verbose=0, freeze_tables=True)
    for a, b in zip(before_tables, tables, strict=True):
        np.testing.assert_array_equal(a, np.array(b))
    assert any(not np.array_equal(a, np.array(b))
               for a, b in zip(before_rest, rest, strict=True))
