"""Numbers bucketed per category (`bucket_by`): schema, analysis, in-graph ids, artifacts."""

import numpy as np
import pytest
import tensorflow as tf

from autorisk_tf.data import artifacts as art
from autorisk_tf.data import reader
from autorisk_tf.data.schema import SchemaError, parse_schema
from autorisk_tf.layers.event_preprocessor import EventPreprocessor, feature_specs_from_artifacts
from tests.test_event_preprocessor import reference_ids

# One value column for twelve lab tests on very different scales, plus a rare test.
TESTS = {"heart_rate": (75, 10), "sodium": (140, 3), "ph": (7.4, 0.05), "glucose": (100, 20),
         "potassium": (4.2, 0.4), "temperature": (37, 0.5), "wbc": (7, 2),
         "hemoglobin": (14, 1.5), "creatinine": (1.0, 0.2), "calcium": (9.5, 0.4),
         "chloride": (102, 3), "bicarbonate": (24, 2)}
LAB_SCHEMA = """\
key: patient
timestamp: {column: ts, format: epoch_s}
fields:
  - {name: test, kind: categorical}
  - {name: value, kind: numeric, num_buckets: 32, bucket_by: test, min_count: 50}
"""


def _lab_csv(seed=0, per_test=300):
    rng = np.random.default_rng(seed)
    rows = ["patient,ts,test,value"]
    for name, (mean, sd) in TESTS.items():
        for i in range(per_test):
            rows.append(f"p{i % 40},{1_700_000_000 + i},{name},{rng.normal(mean, sd):.4f}")
    for i in range(5):
        rows.append(f"p{i},{1_700_000_500 + i},rare,{rng.normal(50, 5):.4f}")
    rows.append("p0,1700000600,,88.5")  # no test name: global boundaries
    rows.append("p1,1700000601,sodium,")  # missing value
    return "\n".join(rows) + "\n"


def _ids(run):
    """(test name, value id, global-bucket id) of every event of the training split."""
    artifacts = run.artifacts
    (spec,) = [s for s in feature_specs_from_artifacts(artifacts) if s["name"] == "value"]
    by_test = EventPreprocessor([spec, {"name": "test", "kind": "categorical",
                                        "vocabulary": artifacts.vocabulary("test"),
                                        "vocab_size": 4 + len(artifacts.vocabulary("test"))}])
    plain = {k: v for k, v in spec.items() if k not in ("bucket_by", "categories",
                                                       "category_boundaries")}
    global_only = EventPreprocessor([plain])
    names, own, shared = [], [], []
    for batch in reader.make_dataset(f"{run.output_dir}/train/*.tfrecord", artifacts.schema,
                                     batch_size=64):
        mask = batch["length"].numpy()[:, None] > np.arange(batch["event/test"].shape[1])
        names += [t.decode() for t in batch["event/test"].numpy()[mask]]
        own += by_test(batch)["value"].numpy()[mask].tolist()
        shared += global_only(batch)["value"].numpy()[mask].tolist()
    return np.array(names), np.array(own), np.array(shared)


@pytest.fixture(scope="module", params=["beam", "files"])
def lab_run(request, tmp_path_factory):
    from beam import preprocess as job
    from tests.conftest import Run

    root = tmp_path_factory.mktemp(f"lab_{request.param}")
    (root / "labs.csv").write_text(_lab_csv(), encoding="utf-8")
    (root / "schema.yaml").write_text(LAB_SCHEMA, encoding="utf-8")
    job.run(["--input", str(root / "labs.csv"), "--schema", str(root / "schema.yaml"),
             "--output_dir", str(root / "out"), "--split", "1,0,0",
             "--shuffle", request.param])
    return Run(str(root / "out"), str(root / "schema.yaml"))


def test_every_test_gets_the_full_bucket_range_only_with_bucket_by(lab_run):
    names, own, shared = _ids(lab_run)
    global_spread = {t: len(np.unique(shared[names == t])) for t in TESTS}
    own_spread = {t: len(np.unique(own[names == t])) for t in TESTS}
    # One global set of 32 quantiles over twelve tests: most tests land in a few buckets.
    assert sorted(global_spread.values())[len(TESTS) // 2] <= 4, global_spread
    # Per test: every test's values spread over (nearly) all 32 buckets.
    assert min(own_spread.values()) >= 30, own_spread
    assert lab_run.stats["reconciled"]


def test_rare_and_missing_categories_use_the_global_boundaries(lab_run):
    names, own, shared = _ids(lab_run)
    assert sorted(lab_run.artifacts.category_boundaries["value"]) == sorted(TESTS)  # not rare
    for fallback in ("rare", ""):
        assert (names == fallback).sum() >= 1
        np.testing.assert_array_equal(own[names == fallback], shared[names == fallback])
    assert art.MISSING_ID in own[names == "sodium"].tolist()  # the empty value


def reloaded(run, folder):
    """The run's artifacts saved and loaded again, and a preprocessor rebuilt from its config.

    Returns:
        `(artifacts, layer)`.
    """
    import keras

    run.artifacts.save(str(folder))
    loaded = art.Artifacts.load(str(folder))
    layer = EventPreprocessor.from_artifacts(loaded)
    return loaded, keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))


def test_ids_match_the_python_reference_and_survive_save_and_config(lab_run, tmp_path):
    loaded, clone = reloaded(lab_run, tmp_path)
    assert loaded.category_boundaries == lab_run.artifacts.category_boundaries
    pattern = f"{lab_run.output_dir}/train/*.tfrecord"
    examples = list(reader.read_sequences(pattern, loaded.schema))
    batch = next(iter(reader.make_dataset(pattern, loaded.schema, batch_size=len(examples))))
    got = clone(batch)["value"].numpy()
    for i, example in enumerate(examples):
        want = reference_ids(example, loaded)["value"]
        np.testing.assert_array_equal(got[i, :len(want)], want)
    spec = next(s for s in feature_specs_from_artifacts(loaded) if s["name"] == "value")
    assert spec["vocab_size"] == art.NUM_RESERVED_IDS + 32  # 31 boundaries -> 32 buckets


def test_category_boundaries_are_the_quantiles_of_each_category():
    layer = EventPreprocessor([{
        "name": "v", "kind": "numeric", "boundaries": [10.0], "bucket_by": "c",
        "categories": ["a", "b"], "category_boundaries": [[1.0, 2.0, 3.0], [100.0]],
        "vocab_size": 8}])
    ids = layer({"length": tf.constant([5]), "time/timestamp_ms": tf.zeros((1, 5), tf.int64),
                 "event/v": tf.constant([[2.5, 2.5, 2.5, 3.0, float("nan")]]),
                 "event/c": tf.constant([["a", "b", "zzz", "a", "a"]])})["v"]
    # a: 2 <= 2.5 < 3 is bucket 2; b: below 100 is bucket 0; unknown: global, below 10.
    assert ids.numpy().tolist() == [[6, 4, 4, 7, art.MISSING_ID]]


def test_without_any_category_of_its_own_every_event_uses_the_global_boundaries():
    layer = EventPreprocessor([{
        "name": "v", "kind": "numeric", "boundaries": [1.0, 2.0], "bucket_by": "c",
        "categories": [], "category_boundaries": [], "vocab_size": 7}])
    ids = layer({"length": tf.constant([3]), "time/timestamp_ms": tf.zeros((1, 3), tf.int64),
                 "event/v": tf.constant([[0.5, 1.5, 2.5]]),
                 "event/c": tf.constant([["", "x", ""]])})["v"]
    assert ids.numpy().tolist() == [[4, 5, 6]]


@pytest.mark.parametrize("field, message", [
    ("{name: v, kind: numeric, bucket_by: nope}", "s.yaml:5: fields[1].bucket_by: 'nope' is not"
                                                  " a single-valued categorical field of this "
                                                  "schema \\(those are: c\\)"),
    ("{name: v, kind: numeric, bucket_by: w}", "fields[1].bucket_by: 'w' is not a single"),
    ("{name: v, kind: numeric, bucket_by: tags}", "fields[1].bucket_by: 'tags' is not a single"),
    ("{name: v, kind: numeric, bucket_by: c, min_count: 0}", "fields[1].min_count: must be at"
                                                             " least 1"),
])
def test_bucket_by_must_name_a_categorical_field(field, message):
    text = ("key: k\ntimestamp: {column: t}\nfields:\n  - {name: c, kind: categorical}\n"
            f"  - {field}\n  - {{name: w, kind: numeric}}\n"
            "  - {name: tags, kind: categorical, separator: '|'}\n")
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_schema(text, source="s.yaml")
