"""Multi-valued categorical fields: vocabulary, ids, summed embedding, masked-event recall."""

import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.data import artifacts as art
from autorisk_tf.data import reader
from autorisk_tf.data.schema import parse_schema
from autorisk_tf.layers.event_preprocessor import EventPreprocessor, feature_specs_from_artifacts
from autorisk_tf.layers.field_embedding import FieldEmbedding
from autorisk_tf.tasks.masked_event import MaskedEventHead, MaskingConfig, mask_events, recall_at_k
from tests.test_event_preprocessor import reference_ids

SCHEMA = """\
key: user
timestamp: {column: ts, format: epoch_s}
fields:
  - {name: kind, kind: categorical}
  - {name: genres, kind: categorical, separator: "|", max_values: 3, min_count: 2}
"""
CSV = """user,ts,kind,genres
a,1,buy,rock|jazz
a,2,buy,rock
a,3,view,
a,4,view,jazz||pop|rock|folk
b,1,buy,rock|rare
b,2,buy,pop|jazz
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from beam import preprocess as job
    from tests.conftest import Run

    root = tmp_path_factory.mktemp("multi")
    (root / "events.csv").write_text(CSV, encoding="utf-8")
    (root / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    job.run(["--input", str(root / "events.csv"), "--schema", str(root / "schema.yaml"),
             "--output_dir", str(root / "out"), "--split", "1,0,0",
             "--earliest_time", "1970-01-01"])  # times are small epoch seconds
    return Run(str(root / "out"), str(root / "schema.yaml"))


def test_every_value_is_counted_in_the_vocabulary(run):
    # rock 4, jazz 3, pop 2; folk and rare once (min_count 2); empty values never.
    assert run.artifacts.vocabularies["genres"] == [("rock", 4), ("jazz", 3), ("pop", 2)]
    assert run.one("a")["event/genres"].tolist()[3] == "jazz||pop|rock|folk"  # raw kept
    assert art.split_values("jazz||pop", "|") == ["jazz", "pop"]


def test_ids_match_the_python_reference(run):
    layer = EventPreprocessor.from_artifacts(run.artifacts)
    pattern = f"{run.output_dir}/train/*.tfrecord"
    examples = list(reader.read_sequences(pattern, run.artifacts.schema))
    batch = next(iter(reader.make_dataset(pattern, run.artifacts.schema, batch_size=2)))
    ids = layer(batch)["genres"].numpy()
    assert ids.shape == (2, 4, 3)
    for i, example in enumerate(examples):
        want = reference_ids(example, run.artifacts)["genres"]
        np.testing.assert_array_equal(ids[i, :len(want)], want)
    a = [i for i, e in enumerate(examples) if e["key"] == "a"][0]
    # rock=4 jazz=5 pop=6; "" is one missing id; past max_values (3) is cut.
    assert ids[a].tolist() == [[4, 5, 0], [4, 0, 0], [1, 0, 0], [5, 6, 4]]


def _features():
    return [{"name": "genres", "kind": "categorical", "vocab_size": 7, "multi": True},
            {"name": "kind", "kind": "categorical", "vocab_size": 6}]


def test_the_embedding_sums_the_values_and_honours_padding():
    layer = FieldEmbedding(_features()[:1], width=4)
    ids = tf.constant([[[4, 5, 0], [5, 4, 0], [4, 0, 0], [0, 0, 0]]])
    out = layer({"genres": ids}).numpy()
    table = layer.get_weights()[0]
    np.testing.assert_allclose(out[0, 0], table[4] + table[5], rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], out[0, 0], rtol=1e-6)  # a set: order is irrelevant
    np.testing.assert_allclose(out[0, 2], table[4], rtol=1e-6)
    np.testing.assert_array_equal(out[0, 3], 0.0)  # padding (mask from the first slot)
    padded = tf.concat([ids, tf.zeros_like(ids)], axis=0)
    np.testing.assert_allclose(layer({"genres": padded}).numpy()[:1], out, atol=1e-6)
    assert layer.get_config()["features"][0]["multi"] is True


def test_masking_hides_the_whole_set_and_the_loss_is_multi_label():
    ids = {"genres": tf.tile(tf.constant([[[4, 5, 0]]]), [4, 40, 1]),
           "kind": tf.fill((4, 40), 4), "padding_mask": tf.ones((4, 40), tf.bool)}
    inputs, targets = mask_events(ids, _features(), MaskingConfig(rate=0.3, mask_token=1.0,
                                                                   random_token=0.0),
                                  tf.constant([3, 4], tf.int64))
    selected = targets["masked_weights"].numpy() > 0
    assert selected.sum() > 10
    assert (inputs["genres"].numpy()[selected] == [art.MASK_ID, 0, 0]).all()
    assert (inputs["genres"].numpy()[~selected] == [4, 5, 0]).all()
    head = MaskedEventHead(_features())
    sequence = tf.random.stateless_normal((4, 40, 8), seed=[1, 1])
    head.build(sequence.shape)
    loss, metrics = head.losses_and_metrics(sequence, targets, float(selected.sum()))
    assert np.isfinite(float(loss))
    assert "mlm/genres/recall@5" in metrics and "mlm/genres/accuracy" not in metrics
    # Both true values are ids 4 and 5, the two most frequent: the baseline finds them all.
    assert float(metrics["mlm/genres/recall@5_frequency"]) == pytest.approx(1.0)


def test_recall_at_k_on_hand_made_scores():
    logits = tf.constant([[0.0, 9, 9, 9, 0.1, 0.2, 0.9, 0.8],
                          [0.0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0]])
    bag = tf.constant([[0.0, 0, 0, 0, 1, 0, 1, 0],   # true {4, 6}; top-2 of ids>=4: 6, 7
                       [0.0, 1, 0, 0, 0, 0, 0, 0]])  # only the missing id: no true value
    out = {k: v.numpy().tolist() for k, v in recall_at_k(logits, bag, k=2).items()}
    assert out == {"recall@2": [0.5, 0.0], "recall@2_frequency": [0.5, 0.0]}


def test_pretraining_predicts_the_set_better_than_the_most_frequent_values(tmp_path):
    """Each user repeats a personal set of three of 12 genres: masked events reveal it."""
    from autorisk_tf.training import Pretrainer, load_config
    from beam import preprocess as job

    rng = np.random.default_rng(0)
    genres = [f"g{i}" for i in range(12)]
    lines = ["user,ts,kind,genres"]
    for user in range(300):
        own = rng.choice(genres, 3, replace=False, p=np.linspace(2, 1, 12) / np.linspace(
            2, 1, 12).sum())
        for t in range(30):
            picked = rng.choice(own, int(rng.integers(1, 3)), replace=False)
            lines.append(f"u{user},{t},{rng.choice(['buy', 'view'])},{'|'.join(picked)}")
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    job.run(["--input", str(tmp_path / "events.csv"), "--schema", str(tmp_path / "schema.yaml"),
             "--output_dir", str(tmp_path / "out"), "--split", "0.8,0.2,0",
             "--earliest_time", "1970-01-01"])
    artifacts = art.Artifacts.load(str(tmp_path / "out" / "artifacts"))
    specs = {s["name"]: s for s in feature_specs_from_artifacts(artifacts)}
    assert specs["genres"]["multi"] and specs["genres"]["vocab_size"] == 16
    config = load_config(None, {
        "model.width": 32, "model.num_blocks": 1, "model.ffn_dim": 64, "model.block_size": 8,
        "model.num_heads": 2, "model.num_global": 1, "input.batch_size": 16,
        "input.bucket_boundaries": [32], "training.steps": 300, "training.warmup_steps": 10,
        "curriculum.quick_thought_start": None,  # masked events only: one pass per step
        "training.learning_rate": 3e-3, "training.checkpoint_every": 1000,
        "masked_event.rate": 0.3})
    trainer = Pretrainer(artifacts, config, str(tmp_path / "run"))
    trainer.fit(str(tmp_path / "out" / "train" / "*.tfrecord"), verbose=0)
    held_out = trainer.evaluate(str(tmp_path / "out" / "valid" / "*.tfrecord"))
    model, frequent = held_out["mlm/genres/recall@5"], held_out["mlm/genres/recall@5_frequency"]
    assert 0.3 < frequent < 0.6  # five of twelve genres, the frequent ones
    assert model > frequent + 0.2, held_out


def test_schema_keys_are_checked():
    with pytest.raises(Exception, match=r"s.yaml:4: fields\[0\].max_values: must be at least 1"):
        parse_schema("key: k\ntimestamp: {column: t}\nfields:\n"
                     "  - {name: g, kind: categorical, separator: '|', max_values: 0}\n",
                     source="s.yaml")
    schema = parse_schema("key: k\ntimestamp: {column: t}\nfields:\n"
                          "  - {name: g, kind: categorical, separator: ';'}\n")
    assert schema.fields[0].separator == ";" and schema.fields[0].max_values == 8


@pytest.mark.parametrize("shuffle", ["files", "beam"])
def test_hand_made_features_count_every_value(tmp_path, shuffle):
    from autorisk_tf import evaluate
    from beam import features

    (tmp_path / "schema.yaml").write_text(SCHEMA)
    (tmp_path / "events.csv").write_text(CSV)
    out = tmp_path / "features"
    features.run(["--input", str(tmp_path / "events.csv"), "--schema",
                  str(tmp_path / "schema.yaml"), "--output_dir", str(out), "--top_values", "2",
                  "--shuffle", shuffle, "--earliest_time", "1970-01-01"])
    keys, values, columns = evaluate.load_features(str(out))
    a = dict(zip(columns, values[list(keys).index("a")], strict=True))
    # user a: rock in 3 events, jazz in 2 (top values rock, jazz); pop and folk once.
    assert (a["genres_top0_count"], a["genres_top1_count"]) == (3.0, 2.0)
    assert a["genres_distinct"] == 4.0 and a["genres_missing_share"] == 0.25
    assert a["genres_top0_share"] == 0.75 and a["genres_other_share"] == 0.5
