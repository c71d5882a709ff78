import os

import keras
import numpy as np
import pytest
from keras import ops

from autorisk_tf.layers import EncoderConfig, SequenceEncoder
from tests.encoder_inputs import FEATURES, NO_TEXT, alone_and_padded, random_ids
from tests.layer_testing import run_layer_test

SMALL = {"width": 16, "num_blocks": 2, "kernel_size": 3, "block_size": 8, "num_heads": 2,
         "num_global": 2, "ffn_dim": 32, "text_dim": 8, "dropout": 0.1}


def _numpy(out):
    return {k: ops.convert_to_numpy(v) for k, v in out.items()}


@pytest.mark.parametrize("options", [{}, {"block_type": "transformer", "pooling": ["mean"]},
                                     {"block_type": "gru", "pooling": ["last"]},
                                     {"block_type": ["conv_attention", "gru"]}])
def test_layer_contract(options):
    ids = random_ids(FEATURES, [11, 5], 11)
    config = EncoderConfig(**{**SMALL, **options})
    out = run_layer_test(lambda **kw: SequenceEncoder(FEATURES, config, **kw), ids, (2, 11, 16))
    assert out["embedding"].shape == (2, SMALL["width"] * len(config.pooling))
    assert np.all(out["sequence"][1, 5:] == 0.0)


@pytest.mark.parametrize("length", [16, 21])  # a multiple of the block size, and not
@pytest.mark.parametrize("features", [FEATURES, NO_TEXT], ids=["text", "no_text"])
@pytest.mark.parametrize("block_type", ["conv_attention", "transformer", "gru",
                                        ("gru", "conv_attention")])
def test_padding_invariance(features, length, block_type):
    keras.utils.set_random_seed(1)
    encoder = SequenceEncoder(features, EncoderConfig(**SMALL, block_type=block_type))
    alone, batch = alone_and_padded(features, length)
    alone, batch = _numpy(encoder(alone)), _numpy(encoder(batch))
    np.testing.assert_allclose(alone["sequence"][0], batch["sequence"][1, :length], atol=1e-5)
    np.testing.assert_allclose(alone["embedding"][0], batch["embedding"][1], atol=1e-5)
    assert np.all(batch["sequence"][1, length:] == 0.0)
    assert np.abs(alone["embedding"]).max() > 1e-3


def test_every_pooling_is_padding_invariant_and_matches_its_definition():
    keras.utils.set_random_seed(4)
    pooling = ("mean", "max", "attention", "last", "inputs", "ids")
    encoder = SequenceEncoder(FEATURES, EncoderConfig(**SMALL, pooling=pooling, ids_dim=5))
    assert encoder.embedding_dim == 5 * 16 + 5  # `ids`: event_type only, its table 5 wide
    length = 13
    alone, batch = alone_and_padded(FEATURES, length)
    out_alone, out_batch = _numpy(encoder(alone)), _numpy(encoder(batch))
    np.testing.assert_allclose(out_alone["embedding"][0], out_batch["embedding"][1], atol=1e-5)
    parts = list(encoder.split_embedding(out_alone["embedding"][None, 0]).values())
    parts = [part[0] for part in parts]
    assert [len(part) for part in parts] == [16] * 5 + [5]
    steps = out_alone["sequence"][0, :length]
    np.testing.assert_allclose(parts[0], steps.mean(0), atol=1e-5)
    np.testing.assert_allclose(parts[1], steps.max(0), atol=1e-5)
    np.testing.assert_allclose(parts[3], steps[length - 1], atol=1e-6)
    inputs = _numpy({"x": encoder.embedding(alone)})["x"][0, :length]
    np.testing.assert_allclose(parts[4], inputs.mean(0), atol=1e-5)
    held = sorted({i for i in alone["event_type"][0] if i >= 4})  # reserved ids left out
    table = ops.convert_to_numpy(encoder.id_bag.weights[0])
    np.testing.assert_allclose(parts[5], table[held].sum(0) / np.sqrt(len(held)), atol=1e-5)


def test_causal_encoder_never_sees_the_future():
    keras.utils.set_random_seed(2)
    encoder = SequenceEncoder(FEATURES, EncoderConfig(**SMALL, causal=True))
    ids = random_ids(FEATURES, [20], 20)
    before = _numpy(encoder(ids))["sequence"]
    ids["event_type"][0, 12:] = 5
    ids["item"][0, 12:, 0] = 7
    after = _numpy(encoder(ids))["sequence"]
    np.testing.assert_array_equal(before[0, :12], after[0, :12])
    assert np.abs(before[0, 12:] - after[0, 12:]).max() > 1e-4


def test_save_load_identical_and_gradients_finite(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    inputs = {s["name"]: keras.Input((None, 6) if s["kind"] == "text" else (None,),
                                     dtype="int32", name=s["name"])
              for s in FEATURES}
    outputs = SequenceEncoder(FEATURES, EncoderConfig(**SMALL))(inputs)["embedding"]
    model = keras.Model(inputs, outputs)
    ids = random_ids(FEATURES, [13, 4], 13)
    ids.pop("padding_mask")
    path = os.path.join(tmp_path, "encoder.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(model(ids)),
                                  ops.convert_to_numpy(loaded(ids)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(ids, training=True)))
    grads = tape.gradient(loss, model.trainable_weights)
    for g, w in zip(grads, model.trainable_weights, strict=True):
        assert g is not None and np.all(np.isfinite(ops.convert_to_numpy(g))), w.path


def test_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown encoder option.*'widht'"):
        EncoderConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="block_type"):
        EncoderConfig(block_type="rnn")
    with pytest.raises(ValueError, match="block_type lists 1 types for 2 blocks"):
        EncoderConfig(num_blocks=2, block_type=["gru"])


def test_block_types_one_per_block_from_the_input_up():
    config = EncoderConfig.from_dict({**SMALL, "block_type": ["conv_attention", "gru"]})
    assert config.block_type == ("conv_attention", "gru")
    encoder = SequenceEncoder(FEATURES, config)
    assert [type(block).__name__ for block in encoder.blocks] == ["EncoderBlock",
                                                                  "RecurrentBlock"]
    assert EncoderConfig(num_blocks=3, block_type="gru").block_types == ("gru",) * 3
    with pytest.raises(ValueError, match="ffn_activation must be one of"):
        EncoderConfig(ffn_activation="swish")
