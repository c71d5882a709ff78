"""beam.embed: RunInference on the SavedModel gives autorisk_tf.embed's vectors."""

import glob

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam import embed as job
from beam.preprocess import UsageError


def test_beam_embed_matches_the_training_path(exported, tmp_path):
    from autorisk_tf.embed import embed, load_embedder, split_patterns

    pattern = split_patterns(exported.data, "all")
    users = job.run(["--model", exported.version_dir, "--input", pattern, "--output",
                     str(tmp_path / "emb"), "--batch_size", "7"])
    table = pq.read_table(glob.glob(str(tmp_path / "emb-*.parquet"))).to_pydict()
    keys, want, labels = embed(load_embedder(exported.model_dir), pattern, exported.schema)
    assert users == len(keys) == len(table["key"]) == 40
    got = dict(zip(table["key"], table["embedding"], strict=True))
    np.testing.assert_allclose(np.array([got[k] for k in keys]), want, atol=1e-5)
    risk = dict(zip(table["key"], table["label_is_risk"], strict=True))
    np.testing.assert_array_equal([risk[k] for k in keys], labels["is_risk"])
    assert max(table["length"]) == 12 and min(table["length"]) >= 1



def test_beam_embed_files_name_the_model_and_its_parts(exported, tmp_path):
    from autorisk_tf.data.fingerprint import embedding_parts, model_fingerprint
    from autorisk_tf.embed import load_embedder, split_patterns
    from autorisk_tf.search import read_embeddings

    job.run(["--model", exported.version_dir, "--input", split_patterns(exported.data, "test"),
             "--output", str(tmp_path / "emb")])
    keys, vectors, model, parts = read_embeddings(str(tmp_path / "emb-*.parquet"))
    embedder = load_embedder(exported.model_dir)
    assert model == model_fingerprint(exported.model_dir)
    assert parts == embedding_parts(embedder)
    assert [name for name, _ in parts] == list(embedder.encoder.config.pooling)
    assert sum(width for _, width in parts) == vectors.shape[1] == embedder.encoder.embedding_dim


def test_beam_embed_names_a_folder_that_is_not_a_savedmodel(exported, tmp_path):
    with pytest.raises(UsageError, match="saved_model.pb"):
        job.run(["--model", str(tmp_path), "--input", f"{exported.data}/train/*.tfrecord",
                 "--output", str(tmp_path / "emb")])
