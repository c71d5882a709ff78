import keras
import numpy as np
import tensorflow as tf
from keras import ops

from autorisk_tf.layers.numeric_state import STATISTICS, NumericState, state_fields
from autorisk_tf.layers.sequence_encoder import EncoderConfig, SequenceEncoder
from tests.layer_testing import run_layer_test

FEATURES = [{"name": "test", "kind": "categorical", "vocab_size": 7},
            {"name": "value", "kind": "numeric", "vocab_size": 9, "continuous": True,
             "bucket_by": "test"},
            {"name": "amount", "kind": "numeric", "vocab_size": 9, "continuous": True},
            {"name": "count", "kind": "numeric", "vocab_size": 9}]
# Categories are ids 4, 5, 6 (columns 0, 1, 2); id 1 is missing, 2 unknown, 0 padding.
INPUTS = {
    "test": np.array([[4, 5, 4, 2, 4, 6, 0], [6, 1, 0, 0, 0, 0, 0]], "int32"),
    "value": np.array([[5, 6, 7, 5, 1, 8, 0], [5, 5, 0, 0, 0, 0, 0]], "int32"),
    "value/value": np.array([[0.5, -1.0, 2.0, 3.0, 0.0, 1.5, 9.0],
                             [-0.5, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0]], "float32"),
    "amount": np.array([[5, 1, 6, 5, 5, 5, 0], [5, 0, 0, 0, 0, 0, 0]], "int32"),
    "amount/value": np.array([[1.0, 0.0, 3.0, -2.0, 0.0, 0.5, 7.0],
                              [0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], "float32"),
    "count": np.array([[5, 5, 5, 5, 5, 5, 0], [5, 5, 0, 0, 0, 0, 0]], "int32"),
    "padding_mask": np.array([[1, 1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0, 0]], bool),
}
WIDTH = len(STATISTICS) * (3 + 1)  # `value` per category of `test`; `amount` alone


def _stats(out, row, offset, categories):
    """`{statistic: [value per category]}` of one row's block of the output."""
    block = out[row, offset:offset + len(STATISTICS) * categories]
    return {name: block[i * categories:(i + 1) * categories].tolist()
            for i, name in enumerate(STATISTICS)}


def test_statistics_per_category_by_hand():
    out = ops.convert_to_numpy(NumericState(FEATURES)(INPUTS))
    assert out.shape == (2, WIDTH)
    # Row 0: test 4 holds 0.5, 2.0 (its value at step 4 is missing); test 5 holds -1.0;
    # test 6 holds 1.5; the unknown category (id 2) and the padded step count for nothing.
    want = {"count": np.log1p([2, 1, 1]), "first": [0.5, -1.0, 1.5], "last": [2.0, -1.0, 1.5],
            "min": [0.5, -1.0, 1.5], "max": [2.0, -1.0, 1.5], "mean": [1.25, -1.0, 1.5]}
    got = _stats(out, 0, 0, 3)
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-6, err_msg=name)
    # `amount` has no category: one summary of its known values 1.0, 3.0, -2.0, 0.0, 0.5.
    got = _stats(out, 0, 18, 1)
    np.testing.assert_allclose([got[s][0] for s in STATISTICS],
                               [np.log1p(5), 1.0, 0.5, -2.0, 3.0, 0.5], rtol=1e-6)
    # Row 1: only test 6 (-0.5); the missing category's 4.0 counts for nothing.
    got = _stats(out, 1, 0, 3)
    assert got["count"][:2] == [0.0, 0.0] and got["max"][:2] == [0.0, 0.0]
    np.testing.assert_allclose([got[s][2] for s in STATISTICS],
                               [np.log1p(1), -0.5, -0.5, -0.5, -0.5, -0.5], rtol=1e-6)


def test_padding_changes_nothing_and_xla_agrees():
    state = NumericState(FEATURES)
    alone = {k: v[:1, :6] for k, v in INPUTS.items()}
    padded = {k: np.concatenate([v[:1], np.zeros_like(v[:1])], axis=1)
              for k, v in INPUTS.items()}
    padded["value/value"][0, 7:] = 50.0  # garbage behind the mask
    np.testing.assert_allclose(ops.convert_to_numpy(state(alone)),
                               ops.convert_to_numpy(state(padded)), atol=1e-6)
    compiled = tf.function(state, jit_compile=True)
    np.testing.assert_allclose(compiled(INPUTS).numpy(), ops.convert_to_numpy(state(INPUTS)),
                               atol=1e-6)


def test_layer_contract():
    out = run_layer_test(lambda **kw: NumericState(FEATURES, **kw), INPUTS, (2, WIDTH),
                         num_trainable_weights=0, run_fit=False)
    assert out.shape == (2, WIDTH)


def test_state_fields_and_a_schema_without_numbers():
    assert [(n["name"], c and c["name"]) for n, c in state_fields(FEATURES)] == [
        ("value", "test"), ("amount", None)]
    state = NumericState(FEATURES[:1] + FEATURES[3:])
    assert state.output_dim == 0
    assert tuple(ops.shape(state(INPUTS))) == (2, 0)


def test_encoder_state_part_alone_or_padded_in_a_batch(tmp_path):
    keras.utils.set_random_seed(0)
    config = EncoderConfig(width=8, num_blocks=1, block_size=4, ffn_dim=0,
                           pooling=("mean", "state"))
    encoder = SequenceEncoder(FEATURES, config)
    assert encoder.pooling_dims == {"mean": 8, "state": WIDTH}
    out = ops.convert_to_numpy(encoder(INPUTS)["embedding"])
    np.testing.assert_allclose(encoder.split_embedding(out)["state"],
                               ops.convert_to_numpy(NumericState(FEATURES)(INPUTS)), atol=1e-6)
    alone = {k: v[1:, :2] for k, v in INPUTS.items()}
    np.testing.assert_allclose(ops.convert_to_numpy(encoder(alone)["embedding"])[0], out[1],
                               atol=1e-5)
    clone = SequenceEncoder.from_config(encoder.get_config())
    clone(INPUTS)
    clone.set_weights(encoder.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(clone(INPUTS)["embedding"]), out, atol=1e-6)
