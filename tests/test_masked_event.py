import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.data.artifacts import MASK_ID
from autorisk_tf.tasks import MaskedEventHead, MaskingConfig, mask_events
from tests.encoder_inputs import FEATURES, random_ids


def _mask(config, seed=(1, 2), lengths=None):
    lengths = lengths or [400, 250, 399, 10] * 8
    ids = random_ids(FEATURES, lengths, max(lengths), seed=0)
    tensors = {k: tf.constant(v) for k, v in ids.items()}
    inputs, targets = mask_events(tensors, FEATURES, config, tf.constant(seed, tf.int64))
    return ids, {k: v.numpy() for k, v in inputs.items()}, {k: v.numpy() for k, v in
                                                             targets.items()}


def test_rates_split_and_targets():
    ids, inputs, targets = _mask(MaskingConfig())
    mask = ids["padding_mask"]
    selected = targets["masked_weights"] > 0
    assert not selected[~mask].any()  # never a padded step
    assert selected.sum() / mask.sum() == pytest.approx(0.15, abs=0.01)
    hidden = inputs["event_type"][selected] == MASK_ID
    assert hidden.mean() == pytest.approx(0.8, abs=0.03)
    unchanged = inputs["event_type"][selected] == ids["event_type"][selected]
    # kept (10%) plus random ids that happen to equal the original (10% x 0.9 x 1/8)
    assert unchanged.mean() == pytest.approx(0.1 + 0.1 * 0.9 / 8, abs=0.025)
    for name in ("event_type", "amount", "item"):
        np.testing.assert_array_equal(targets[name], ids[name])
        np.testing.assert_array_equal(inputs[name][~selected], ids[name][~selected])
    np.testing.assert_array_equal(inputs["time_delta"], ids["time_delta"])  # time stays
    masked_text = inputs["item"][selected & (inputs["event_type"] == MASK_ID)]
    assert (masked_text[:, 0] == MASK_ID).all() and (masked_text[:, 1:] == 0).all()


def test_seed_decides_the_mask():
    _, a, _ = _mask(MaskingConfig(), seed=(1, 2))
    _, b, _ = _mask(MaskingConfig(), seed=(1, 2))
    _, c, _ = _mask(MaskingConfig(), seed=(1, 3))
    np.testing.assert_array_equal(a["event_type"], b["event_type"])
    assert not np.array_equal(a["event_type"], c["event_type"])


def test_options():
    ids, inputs, targets = _mask(MaskingConfig(rate=0.5, mask_token=1.0, random_token=0.0,
                                               mask_time_features=True, predict_text=False))
    selected = targets["masked_weights"] > 0
    assert selected.sum() / ids["padding_mask"].sum() == pytest.approx(0.5, abs=0.02)
    assert (inputs["time_delta"][selected] == MASK_ID).all()
    assert "item" not in targets
    with pytest.raises(ValueError, match="sum to <= 1"):
        MaskingConfig(mask_token=0.9, random_token=0.2)


def test_head_losses_and_accuracy_match_a_manual_computation():
    features = [{"name": "c", "kind": "categorical", "vocab_size": 6}]
    head = MaskedEventHead(features)
    head.build((None, 4))
    sequence = tf.random.stateless_normal((2, 5, 4), seed=(0, 1))
    targets = {"c": tf.constant([[4, 5, 4, 0, 0], [5, 5, 4, 4, 1]]),
               "masked_weights": tf.constant([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]], tf.float32)}
    loss, metrics = head.losses_and_metrics(sequence, targets, tf.constant(4.0))
    logits = head(sequence)["c"].numpy()
    sel = targets["masked_weights"].numpy() > 0
    t = targets["c"].numpy()[sel]
    lg = logits[sel]
    ce = -(lg[np.arange(4), t] - np.log(np.exp(lg).sum(-1)))
    assert float(loss) == pytest.approx(ce.mean(), rel=1e-5)
    assert float(metrics["mlm/c/accuracy"]) == pytest.approx((lg.argmax(-1) == t).mean())
