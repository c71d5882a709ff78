"""Linear-probe helpers shared by the fine-tuning tests: keys, embeddings, probe AUC."""

import keras
import numpy as np


def split_train_keys(trainer, data):
    """The first 200 keys of the train split, and the next 300."""
    from autorisk_tf.data import reader

    keys = [ex["key"] for ex in reader.read_sequences(f"{data}/train/*.tfrecord",
                                                      trainer.artifacts.schema)]
    return keys[:200], keys[200:500]


def risk_labels(trainer, data):
    """Key -> is_risk label (0/1) of every sequence of the train split, in file order."""
    from autorisk_tf.data import reader
    from autorisk_tf.data import sequence_example as seqex

    feature = seqex.label_feature("is_risk")
    return {ex["key"]: int(ex[feature] > 0.5) for ex in reader.read_sequences(
        f"{data}/train/*.tfrecord", trainer.artifacts.schema)}


def probe_auc(model, trainer, data, train_keys, test_keys):
    """AUC on test_keys of scikit-learn's LR on the model's normalised embeddings of
    train_keys (both of the train split, label is_risk): what a probed head scores."""
    from sklearn.metrics import roc_auc_score

    from autorisk_tf.evaluate import logistic_regression
    from autorisk_tf.finetune import labelled_batches

    def normed(keys):
        return normed_embeddings(model, labelled_batches(
            f"{data}/train/*.tfrecord", trainer.artifacts.schema, "is_risk", None, 64, False,
            0, keys=keys))

    (train_x, train_y), (test_x, test_y) = normed(train_keys), normed(test_keys)
    regression = logistic_regression(0.1, standardise=False).fit(train_x, train_y)
    return roc_auc_score(test_y, regression.predict_proba(test_x)[:, 1])


def normed_embeddings(model, batches):
    """The classifier's normalised embeddings (the head's input) and labels of batches."""
    xs, ys = [], []
    for inputs, y in batches:
        embedding = model.embedder(inputs, training=False)["embedding"]
        xs.append(np.asarray(model.norm(keras.ops.cast(embedding, "float32"))))
        ys.append(np.asarray(y).reshape(-1))
    return np.concatenate(xs), np.concatenate(ys)
