import keras
import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.tasks.next_visit import NextVisitConfig, NextVisitHead, cut_histories
from autorisk_tf.training import Pretrainer, load_config
from tests.conftest import SMALL
from tests.encoder_inputs import FEATURES, NO_TEXT, random_ids

# time_delta ids: 1 missing (first event), 4 a gap of 0 s (same visit), > 4 a new visit.
DELTAS = np.array([[1, 4, 9, 4, 12, 0],     # visits start at 2 and 4
                   [1, 4, 4, 0, 0, 0],      # one visit only: nothing to predict
                   [1, 10, 11, 12, 13, 14]])  # every event is a visit
LENGTHS = [5, 3, 6]


def _batch():
    ids = random_ids(FEATURES, LENGTHS, 6, seed=3)
    ids["time_delta"] = DELTAS.astype("int32")
    return ids


def _cuts(config, ids, features=FEATURES, draws=60):
    """Every draw's (history, targets) as numpy, for seeds 0..draws-1."""
    out = []
    for seed in range(draws):
        history, targets = cut_histories({k: tf.constant(v) for k, v in ids.items()},
                                         features, config, tf.constant([seed, 1], tf.int64))
        out.append(({k: v.numpy() for k, v in history.items()},
                    {k: v.numpy() for k, v in targets.items()}))
    return out


@pytest.mark.parametrize("min_events,expected", [(1, [{2, 4}, set(), {1, 2, 3, 4, 5}]),
                                                 (3, [{4}, set(), {3, 4, 5}])])
def test_histories_end_where_a_visit_starts_and_targets_are_its_first_event(min_events,
                                                                             expected):
    ids = _batch()
    seen = [set(), set(), set()]
    for history, targets in _cuts(NextVisitConfig(min_events=min_events), ids):
        for row, length in enumerate(LENGTHS):
            n = int(history["padding_mask"][row].sum())
            if not expected[row]:  # no visit to predict: whole sequence, weight 0
                assert n == length and targets["masked_weights"][row, 0] == 0
                continue
            assert targets["masked_weights"][row, 0] == 1
            seen[row].add(n)
            for name in ("event_type", "amount", "time_delta"):
                np.testing.assert_array_equal(history[name][row, :n], ids[name][row, :n])
                assert not history[name][row, n:].any()
                assert targets[name][row, 0] == ids[name][row, n]
            np.testing.assert_array_equal(targets["item"][row, 0], ids["item"][row, n])
    assert seen == expected  # every visit start is drawn, and nothing else


def test_without_a_time_delta_every_event_past_the_shortest_history_is_a_visit():
    features = [spec for spec in NO_TEXT if spec["kind"] != "time"]
    ids = random_ids(features, [4, 1], 5, seed=1)
    cuts = _cuts(NextVisitConfig(min_events=2), ids, features)
    assert {int(h["padding_mask"][0].sum()) for h, _ in cuts} == {2, 3}
    assert all(t["masked_weights"][1, 0] == 0 for _, t in cuts)
    assert "item" not in cuts[0][1]


def test_min_events_is_checked():
    with pytest.raises(ValueError, match="min_events must be at least 1"):
        NextVisitConfig(min_events=0)


def test_head_loss_is_the_cross_entropy_of_the_drawn_rows_and_round_trips():
    ids = _batch()
    _, targets = cut_histories({k: tf.constant(v) for k, v in ids.items()}, NO_TEXT,
                               NextVisitConfig(), tf.constant([0, 1], tf.int64))
    head = NextVisitHead(NO_TEXT, name="next_visit_head")
    head.build((None, 5))
    embedding = tf.random.stateless_normal([3, 5], seed=[4, 2])
    loss, metrics = head.next_loss_and_metrics(embedding, targets, 2.0)
    expected = 0.0
    for row in (0, 2):  # row 1 has no visit to predict
        for spec in NO_TEXT:
            logits = head.classifiers[spec["name"]](embedding[row:row + 1])[0].numpy()
            target = targets[spec["name"]][row, 0].numpy()
            expected += (np.log(np.exp(logits).sum()) - logits[target]) / 2.0
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert {"next/time_delta/loss", "next/time_delta/accuracy"} <= set(metrics)
    restored = keras.layers.deserialize(keras.layers.serialize(head))
    assert isinstance(restored, NextVisitHead)
    assert restored.predict_time and [s["name"] for s in restored.targets] == [
        s["name"] for s in head.targets]


def test_pretrainer_learns_the_next_visit_and_checkpoints_its_head(pretraining_data, tmp_path):
    from autorisk_tf.data.artifacts import Artifacts

    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    overrides = {"model.width": 16, "model.num_blocks": 1, "model.ffn_dim": 16,
                 "model.text_dim": 8, "curriculum.masked_event_weight": 0.0,
                 "curriculum.quick_thought_start": None, "curriculum.next_visit_weight": 1.0,
                 "training.steps": 40, "training.warmup_steps": 2,
                 "training.learning_rate": 0.005}
    trainer = Pretrainer(artifacts, load_config(SMALL, overrides), str(tmp_path))
    final = trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
    assert "mlm/loss" not in final
    losses = [h["next/loss"] for h in trainer.history]
    # 24.4 at the first step, 15.6 over the last ten on this seeded data.
    assert np.mean(losses[-10:]) < losses[0] - 5.0, losses
    kernel = trainer.heads["next_head"].classifiers["time_delta"].kernel.numpy()
    again = Pretrainer(artifacts, load_config(SMALL, overrides), str(tmp_path))
    assert again.restore() == 40
    np.testing.assert_array_equal(again.heads["next_head"].classifiers["time_delta"].kernel.numpy(),
                                  kernel)
    off = Pretrainer(artifacts, load_config(SMALL), str(tmp_path / "off"))
    assert "next_head" not in off.heads
