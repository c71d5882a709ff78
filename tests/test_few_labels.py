"""Label draws and curves shared by the report and the real-data benchmark."""

import keras
import numpy as np
import pytest

from autorisk_tf import evaluate, few_labels
from tests.probing import probe_auc, risk_labels, split_train_keys


def test_draws_are_stratified_seeded_and_capped_by_the_pool():
    y = np.array([1] * 100 + [0] * 900)
    pool = np.arange(0, 1000, 2)  # 50 positives, 450 negatives
    first = few_labels.draw_labels(pool, y, "100", seed=0)
    assert len(first) == 100 and set(first) <= set(pool)
    assert y[first].sum() == 10  # the pool's 10% positives
    np.testing.assert_array_equal(first, few_labels.draw_labels(pool, y, 100, seed=0))
    assert set(first) != set(few_labels.draw_labels(pool, y, 100, seed=1))
    np.testing.assert_array_equal(few_labels.draw_labels(pool, y, "all", seed=3), pool)
    np.testing.assert_array_equal(few_labels.draw_labels(pool, y, 5000, seed=3), pool)
    assert few_labels.usable_sizes(["100", "300", "1000", "all"], 500) == ["100", "300", "all"]
    assert few_labels.usable_sizes(["100", "1000"], 500) == ["100"]


def test_curve_grows_with_labels_on_a_learnable_task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 20))
    y = (x[:, :10].sum(axis=1) + rng.normal(scale=2.0, size=3000) > 0).astype(int)
    train, test = np.arange(2000), np.arange(2000, 3000)

    def run(rows, seed):
        return evaluate.fitted_auc(lambda: evaluate.logistic_regression(1.0), x[rows],
                                     y[rows], x[test], y[test])

    points = few_labels.curve(run, train, y, ["30", "300", "all"], seeds=[0, 1, 2])
    assert [p["labels"] for p in points] == [30, 300, 2000]
    for p in points:
        assert len(p["aucs"]) == 3 and p["min"] <= p["mean"] <= p["max"]
    assert points[0]["mean"] < points[-1]["mean"]
    assert points[-1]["mean"] > 0.85
    assert points[-1]["min"] == points[-1]["max"]  # all labels: the same rows every seed


def test_finetune_epochs_aim_at_a_step_budget():
    assert few_labels.finetune_epochs(100, steps=300) == 30  # capped
    assert few_labels.finetune_epochs(3200, steps=300) == 3
    assert few_labels.finetune_epochs(3200, steps=100, low=1) == 1
    assert few_labels.finetune_epochs(320, steps=100, low=1) == 10


def test_copies_of_the_embedder_start_where_asked(pretrained):
    trainer, _ = pretrained
    embedder = trainer.embedder()
    original = [np.array(w) for w in embedder.weights]
    same = few_labels.copy_embedder(embedder, pretrained=True, seed=0)
    for a, b in zip(same.weights, original, strict=True):
        np.testing.assert_array_equal(np.array(a), b)
    fresh = few_labels.copy_embedder(embedder, pretrained=False, seed=0)
    kernels = [(np.array(a), b) for a, b in zip(fresh.weights, original, strict=True)
               if b.ndim >= 2]
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)
    again = few_labels.copy_embedder(embedder, pretrained=False, seed=0)
    for a, b in zip(again.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    for a, b in zip(embedder.weights, original, strict=True):  # the original is untouched
        np.testing.assert_array_equal(np.array(a), b)


def _runner(trainer, data, test_keys=None, **options):
    """A Finetuner of the session's encoder on is_risk, scoring test_keys of the train split."""
    return few_labels.Finetuner(trainer.embedder(), data, trainer.artifacts.schema, "is_risk",
                                test_keys, test_split="train", **options)


def test_finetuner_scores_the_probe_alone_and_uses_the_pretrained_learning_rate(
        pretrained, pretraining_data):
    trainer, _ = pretrained
    train_keys, test_keys = split_train_keys(trainer, pretraining_data)
    runner = _runner(trainer, pretraining_data, test_keys, pretrained_learning_rate=0.0,
                     probe_c=0.1)
    probe = runner.auc(True, train_keys, epochs=0, seed=0)
    expected = probe_auc(runner.model, trainer, pretraining_data, train_keys, test_keys)
    assert expected > 0.75
    assert abs(probe - expected) < 0.01, (probe, expected)
    # pre-trained runs train at their own rate (0 here): an epoch leaves the probe as it was
    assert abs(runner.auc(True, train_keys, epochs=1, seed=0) - probe) < 1e-6
    # runs from scratch keep the shared rate and start from new weights, not the probe
    assert abs(runner.auc(False, train_keys, epochs=0, seed=0) - probe) > 1e-3
    assert float(runner.model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_validation_curve_scores_the_held_out_users_after_each_epoch(pretrained,
                                                                       pretraining_data):
    trainer, _ = pretrained
    fit_keys, valid_keys = split_train_keys(trainer, pretraining_data)
    # the two runners start alike whatever the process drew before them
    keras.utils.set_random_seed(1)
    curve_runner = _runner(trainer, pretraining_data)
    curve = curve_runner.validation_curve(False, fit_keys, valid_keys, epochs=3, seed=0)
    assert len(curve) == 4
    # the same runs, stopped after 0 and 2 epochs and scored on the validation users
    # as their test users, give the curve's points
    keras.utils.set_random_seed(2)
    scorer = _runner(trainer, pretraining_data, valid_keys)
    assert scorer.auc(False, fit_keys, epochs=0, seed=0) == pytest.approx(curve[0], abs=1e-4)
    assert scorer.auc(False, fit_keys, epochs=2, seed=0) == pytest.approx(curve[2], abs=1e-4)
    assert curve[3] > curve[0] + 0.05  # training from new weights learns the label


def test_early_stopping_keeps_the_probe_when_fine_tuning_cannot_improve_it(
        pretrained, pretraining_data):
    trainer, _ = pretrained
    train_keys, test_keys = split_train_keys(trainer, pretraining_data)
    # at learning rate 0 every epoch scores as the probe did: the fewest epochs (0) win,
    # and the run repeated on all the labels is the probe fitted on all of them
    runner = _runner(trainer, pretraining_data, test_keys, pretrained_learning_rate=0.0)
    labels = risk_labels(trainer, pretraining_data)
    y = np.array([labels[k] for k in train_keys])
    auc, epochs = few_labels.early_stopped_auc(runner, True, train_keys, y, epochs=2, seed=0)
    assert epochs == 0
    assert auc == pytest.approx(runner.auc(True, train_keys, epochs=0, seed=0), abs=1e-6)


def test_pretrained_runs_keep_the_embedding_tables_and_scratch_runs_train_them(
        pretrained, pretraining_data):
    from autorisk_tf.finetune import embedding_tables

    trainer, _ = pretrained
    train_keys, test_keys = split_train_keys(trainer, pretraining_data)
    runner = _runner(trainer, pretraining_data, test_keys, pretrained_learning_rate=1e-3)
    model = runner.model

    def tables_and_rest():
        weights = [w for layer in embedding_tables(model.embedder) for w in layer.weights]
        tables, table_ids = [np.array(w) for w in weights], {id(w) for w in weights}
        rest = [np.array(w) for w in model.embedder.trainable_weights
                if id(w) not in table_ids]
        return tables, rest

    for pretrained_start, tables_move in ((True, False), (False, True), (True, False)):
        runner.auc(pretrained_start, train_keys, epochs=0, seed=0)
        tables, rest = tables_and_rest()
        assert tables and rest
        runner.auc(pretrained_start, train_keys, epochs=1, seed=0)
        after_tables, after_rest = tables_and_rest()
        moved = [not np.array_equal(a, b) for a, b in zip(tables, after_tables, strict=True)]
        assert any(moved) == tables_move, pretrained_start
        assert any(not np.array_equal(a, b) for a, b in zip(rest, after_rest, strict=True))


def test_early_stopping_trains_when_the_held_out_users_say_it_helps(pretrained,
                                                                     pretraining_data):
    trainer, _ = pretrained
    train_keys, test_keys = split_train_keys(trainer, pretraining_data)
    runner = _runner(trainer, pretraining_data, test_keys)
    labels = risk_labels(trainer, pretraining_data)
    y = np.array([labels[k] for k in train_keys])
    # from new weights epoch 0 is a random head: the held-out users pick a trained count,
    # and the AUC is that of the run repeated on all the labels for that count
    auc, epochs = few_labels.early_stopped_auc(runner, False, train_keys, y, epochs=3, seed=0)
    assert 1 <= epochs <= 3
    assert auc == pytest.approx(runner.auc(False, train_keys, epochs, seed=0), abs=1e-4)
    assert auc > runner.auc(False, train_keys, 0, seed=0) + 0.05


def test_test_scores_are_the_scores_behind_the_test_auc(pretrained, pretraining_data):
    from sklearn.metrics import roc_auc_score

    trainer, _ = pretrained
    train_keys, test_keys = split_train_keys(trainer, pretraining_data)
    runner = _runner(trainer, pretraining_data, test_keys, probe_c=0.1)
    auc = runner.auc(True, train_keys, epochs=0, seed=0)
    scores = runner.test_scores()
    labels = risk_labels(trainer, pretraining_data)
    assert set(scores) == set(test_keys)  # every test user once, keyed by its key
    assert all(0.0 < s < 1.0 for s in scores.values())
    keys = sorted(scores)
    assert roc_auc_score([labels[k] for k in keys], [scores[k] for k in keys]) == \
        pytest.approx(auc, abs=5e-3)  # Keras AUC: 200 thresholds
