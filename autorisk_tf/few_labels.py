"""Few-label learning curves: downstream AUC against the number of training labels.

The same seeded, stratified label draws serve every method (logistic regression on
embeddings, GBDT on hand-made features, the encoder fine-tuned from its pre-trained weights
or from scratch), so their curves are comparable point by point. Used by
`python -m autorisk_tf.report` and `benchmarks/real_data_bench.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from autorisk_tf.data import fileio
from autorisk_tf.finetune import (  # the learning rates are this module's defaults too
    LEARNING_RATE,
    PRETRAINED_LEARNING_RATE,
    SequenceClassifier,
    compile_classifier,
    copy_embedder,
    embedding_tables,
    labelled_batches,
    probe_head,
)

LABEL_COUNTS = ("100", "300", "1000", "3000", "all")



def draw_labels(pool: np.ndarray, y: np.ndarray, size: str | int, seed: int) -> np.ndarray:
    """A stratified, seeded draw of training rows.

    Args:
        pool: int [P]. Row indices that may be drawn.
        y: [N]. Labels of all rows (indexed by pool).
        size: int or str. Rows to draw; `all` (or a size at least P) takes the whole pool.
        seed: int. Seed of the draw.

    Returns:
        int [min(size, P)] row indices.
    """
    from sklearn.model_selection import train_test_split

    pool = np.asarray(pool)
    if size == "all" or int(size) >= len(pool):
        return pool
    return train_test_split(pool, train_size=int(size), stratify=y[pool],
                            random_state=seed)[0]


def usable_sizes(sizes: Sequence[str], pool_size: int) -> list[str]:
    """The label counts below the pool size, then `all` (when asked for), in order."""
    kept = [s for s in sizes if s != "all" and int(s) < pool_size]
    return kept + ["all"] if "all" in sizes else kept


def curve(run: Callable[[np.ndarray, int], float], pool: np.ndarray, y: np.ndarray,
          sizes: Sequence[str], seeds: Sequence[int]) -> list[dict]:
    """AUC of one method at each label count, for each seed.

    Args:
        run: `(train_rows, seed) -> AUC` of the method trained on those rows.
        pool: int [P]. Training rows to draw from.
        y: [N]. Labels.
        sizes: sequence of str. Label counts (`usable_sizes`).
        seeds: sequence of int. Seeds of the draws (and of the method).

    Returns:
        One dict per size: `size`, `labels` (rows drawn), `aucs` (one per seed), `mean`,
        `min`, `max`.
    """
    points = []
    for size in sizes:
        aucs, count = [], 0
        for seed in seeds:
            rows = draw_labels(pool, y, size, seed)
            count = len(rows)
            aucs.append(float(run(rows, seed)))
        points.append({"size": size, "labels": count, "aucs": [round(a, 4) for a in aucs],
                       "mean": round(float(np.mean(aucs)), 4),
                       "min": round(float(np.min(aucs)), 4),
                       "max": round(float(np.max(aucs)), 4)})
    return points


def finetune_epochs(labels: int, steps: int, batch_size: int = 32, low: int = 3,
                    high: int = 30) -> int:
    """Epochs that give about `steps` optimiser steps on `labels` sequences, within bounds."""
    return int(np.clip(np.ceil(steps / max(labels / batch_size, 1)), low, high))


class Finetuner:
    """Fine-tunes one encoder many times with a single compiled classifier.

    Label counts, seeds, pre-trained or from scratch: every run shares one classifier, so
    its training step is traced once.

    Each run restores the starting weights (the pre-trained encoder's, or new ones drawn
    from the run's seed; the head's initial weights), zeroes the optimiser's state, trains
    on the given users and scores the test users.

    Args:
        embedder: SequenceEmbedder. The pre-trained embedder (copied, never changed).
        data: str. Output folder of beam.preprocess.
        schema: Schema. Its schema.
        label: str. Binary label column.
        test_keys: sequence of str or None. Users scored (of `test_split`); None: all
            labelled users of the split.
        test_split: str. Split of the test users.
        train_split: str. Split of the training users.
        batch_size: int. Sequences per batch.
        learning_rate: float. Adam learning rate of the runs from scratch.
        pretrained_learning_rate: float or None. Adam learning rate of the runs that start
            from the pre-trained weights; None: `learning_rate`. LP-FT fine-tunes gently,
            so as not to distort the pre-trained features.
        probe: bool. Start each pre-trained run's head from a logistic regression on the
            encoder's embeddings of its training users (`finetune.probe_head`: linear
            probing, then fine-tuning); runs from scratch, whose embeddings carry nothing
            to probe, start from the head's initial weights either way.
        freeze_tables: bool. Pre-trained runs keep the embedding tables
            (`finetune.embedding_tables`) as pre-trained and train the rest. With a few
            hundred users, fine-tuning moves only the rows of the ids those users touched,
            so the users it is applied to, whose ids are mostly other ones, would meet a
            table half moved and half not. Runs from scratch train their tables either way.
        probe_c: float or None. C of the probe (`finetune.probe_head`); None: chosen by
            inner CV on the run's training users.
    """

    def __init__(self, embedder, data: str, schema, label: str,
                 test_keys: Sequence[str] | None = None, test_split: str = "test",
                 train_split: str = "train", batch_size: int = 32,
                 learning_rate: float = LEARNING_RATE, probe: bool = True,
                 pretrained_learning_rate: float | None = PRETRAINED_LEARNING_RATE,
                 freeze_tables: bool = True, probe_c: float | None = None):
        self._embedder, self._schema, self._label = embedder, schema, label
        self._batch_size, self._learning_rate = batch_size, learning_rate
        self._pretrained_learning_rate = (learning_rate if pretrained_learning_rate is None
                                          else pretrained_learning_rate)
        self._probe, self._probe_c = probe, probe_c
        self._train = fileio.join(data, train_split, "*.tfrecord")
        self._batches = labelled_batches
        # the head's initial weights and the dropout's seed states are drawn here, from a
        # fixed seed: a run must not depend on what the process drew before
        keras.utils.set_random_seed(0)
        self.model = SequenceClassifier(copy_embedder(embedder, True, 0), None,
                                        name="sequence_classifier")
        self.model.build()
        compile_classifier(self.model, learning_rate)
        self._tables = embedding_tables(self.model.embedder)
        # dropout draws from its layers' own seed states, which keras.utils.set_random_seed
        # does not reset: each run restarts them from its seed
        self._seed_states = [v for v in self.model.variables
                             if v.name == "seed_generator_state"]
        self._seed_starts = [np.array(v) for v in self._seed_states]
        self._freeze_tables, self._frozen = freeze_tables, False
        self._head = [w.numpy() for w in self.model.head.weights + self.model.norm.weights]
        self._test = labelled_batches(fileio.join(data, test_split, "*.tfrecord"), schema,
                                      label, None, batch_size, False, 0,
                                      keys=None if test_keys is None else list(test_keys))

    def auc(self, pretrained: bool, train_keys: Sequence[str], epochs: int,
            seed: int) -> float:
        """Test AUC after fine-tuning from the pre-trained or from new weights.

        Args:
            pretrained: bool. Start from the pre-trained weights (True) or from new random
                ones drawn from seed (False).
            train_keys: sequence of str. Users trained on.
            epochs: int. Training epochs; 0 scores the starting weights (with `probe`, a
                pre-trained run's linear probe alone).
            seed: int. Seed of the new weights, the shuffling and the dropout.

        Returns:
            The AUC on the test users after the last epoch.
        """
        self._start(pretrained, train_keys, seed)
        if epochs:
            self._fit(train_keys, epochs, seed)
        return float(self.model.evaluate(self._test, verbose=0, return_dict=True)["auc"])

    def test_scores(self) -> dict[str, float]:
        """The classifier's score of each test user, with its weights as they are now.

        Returns:
            dict: key -> the positive class's probability, for every test user.
        """
        from autorisk_tf.data import sequence_example as seqex

        scores = {}
        for inputs, _ in self._test:
            batch = self.model(inputs, training=False).numpy()[:, 0]
            scores.update(zip((k.decode("utf-8") for k in inputs[seqex.KEY].numpy()),
                              batch.tolist(), strict=True))
        return scores

    def validation_curve(self, pretrained: bool, train_keys: Sequence[str],
                         valid_keys: Sequence[str], epochs: int, seed: int) -> list[float]:
        """AUC on validation users (of the training split) after 0, 1, ..., epochs epochs.

        Args:
            pretrained: bool. Start from the pre-trained weights or from new ones.
            train_keys: sequence of str. Users trained on.
            valid_keys: sequence of str. Users scored after each epoch.
            epochs: int. Training epochs.
            seed: int. Seed of the new weights, the shuffling and the dropout.

        Returns:
            epochs + 1 AUCs: the starting weights', then one per epoch.
        """
        self._start(pretrained, train_keys, seed)
        valid = self._batches(self._train, self._schema, self._label, None, self._batch_size,
                              False, 0, keys=list(valid_keys))
        start = float(self.model.evaluate(valid, verbose=0, return_dict=True)["auc"])
        if not epochs:
            return [start]
        history = self._fit(train_keys, epochs, seed, validation_data=valid)
        return [start] + [float(a) for a in history.history["val_auc"]]

    def _start(self, pretrained: bool, train_keys: Sequence[str], seed: int) -> None:
        """Sets up a run: tables frozen or not, starting weights, optimiser, probed head."""
        frozen = self._freeze_tables and pretrained
        if frozen != self._frozen:  # a new set of trained variables: a new training step
            for layer in self._tables:
                layer.trainable = not frozen
            compile_classifier(self.model, self._learning_rate)
            self._frozen = frozen
        start = copy_embedder(self._embedder, pretrained, seed)
        self.model.embedder.set_weights(start.get_weights())
        for variable, value in zip(self.model.head.weights + self.model.norm.weights,
                                   self._head, strict=True):
            variable.assign(value)
        for variable in self.model.optimizer.variables:  # iterations, moments, learning rate
            variable.assign(np.zeros(variable.shape, variable.dtype))
        self.model.optimizer.learning_rate = (self._pretrained_learning_rate if pretrained
                                              else self._learning_rate)
        if self._probe and pretrained:
            probe_head(self.model, self._batches(
                self._train, self._schema, self._label, None, self._batch_size, False, seed,
                keys=list(train_keys)), self._probe_c)

    def _fit(self, train_keys: Sequence[str], epochs: int, seed: int, **kwargs):
        """Trains the classifier on the given users; returns the Keras history."""
        keras.utils.set_random_seed(seed)
        for state, start in zip(self._seed_states, self._seed_starts, strict=True):
            state.assign(start + np.array([seed, 0], start.dtype))
        train = self._batches(self._train, self._schema, self._label, None,
                              self._batch_size, True, seed, keys=list(train_keys))
        return self.model.fit(train, epochs=epochs, verbose=0, **kwargs)


def early_stopped_auc(runner: Finetuner, pretrained: bool, keys: Sequence[str],
                      y: np.ndarray, epochs: int, seed: int,
                      validation: float = 0.25) -> tuple[float, int]:
    """Test AUC of a fine-tuning run whose epoch count is chosen on held-out labels.

    A stratified `validation` share of the labelled users is held out; the run trains on
    the rest, scored on the held-out users after every epoch (epoch 0: the starting
    weights; for a probed pre-trained run, the linear probe alone). The run is then
    repeated on all the users for the epoch count that scored best (the fewest among
    ties). Few labels cannot tell how long a fine-tuning helps before it distorts the
    pre-trained features or overfits; the held-out users tell it for each run.

    Args:
        runner: Finetuner.
        pretrained: bool. Start from the pre-trained weights or from new ones.
        keys: sequence of str. Labelled users (of the runner's training split).
        y: int [len(keys)]. Their labels (for the stratified split).
        epochs: int. Most epochs tried.
        seed: int. Seed of the split, the new weights, the shuffling and the dropout.
        validation: float. Share of the users held out to choose the epoch count.

    Returns:
        (test AUC, chosen epoch count).
    """
    from sklearn.model_selection import train_test_split

    keys = np.asarray(keys)
    fit, valid = train_test_split(keys, test_size=validation, stratify=y,
                                  random_state=seed)
    curve = runner.validation_curve(pretrained, list(fit), list(valid), epochs, seed)
    best = int(np.argmax(curve))
    return runner.auc(pretrained, list(keys), best, seed), best
