"""Similar-user search: the index, its incremental changes, its files and its command line."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from autorisk_tf.search import SearchError, UserIndex, choose_kind, read_embeddings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _vectors(n, dim=32, seed=0, clusters=50):
    """Clustered vectors (like embeddings of users who behave alike), seeded."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
            ).astype(np.float32)


def _exact(keys, vectors, queries, k):
    """Brute-force cosine neighbours in numpy: the reference."""
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    order = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]
    return [[keys[i] for i in row] for row in order]


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])


def test_flat_search_equals_numpy_and_scores_are_cosines():
    vectors = _vectors(500)
    keys = [f"u{i}" for i in range(500)]
    index = UserIndex.build(keys, vectors, kind="flat")
    found, scores = index.search(vectors[:20], 5)
    assert [list(row) for row in found] == _exact(keys, vectors, vectors[:20], 5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    want = unit[0] @ unit[[keys.index(k) for k in found[0]]].T
    np.testing.assert_allclose(scores[0], want, atol=1e-5)
    assert index.neighbours("u3", 4)[0][0] != "u3"  # itself left out
    assert choose_kind(1000) == "flat" and choose_kind(200_000) == "hnsw"
    assert choose_kind(20_000_000) == "ivfpq"


def test_part_cosine_scores_are_the_mean_of_the_parts_cosines(tmp_path):
    from autorisk_tf.neighbours import balance_parts

    rng = np.random.default_rng(3)
    parts = [["mean", 24], ["state", 0], ["ids", 8]]
    # A part with a wide spread (mean) and one with a narrow spread (ids): plain cosine
    # follows the first alone, part_cosine weighs both alike.
    vectors = np.hstack([50 * rng.normal(size=(400, 24)), 0.1 * rng.normal(size=(400, 8))]
                        ).astype(np.float32)
    keys = [f"u{i}" for i in range(400)]
    index = UserIndex.build(keys, vectors, kind="flat", parts=parts)
    assert index.metric == "part_cosine"  # auto, with parts
    found, scores = index.search(vectors[:5], 10)

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    for q in range(5):
        want = [(cos(vectors[q, :24], vectors[i, :24]) + cos(vectors[q, 24:], vectors[i, 24:]))
                / 2 for i in (keys.index(k) for k in found[q])]
        np.testing.assert_allclose(scores[q], want, atol=1e-5)
        everyone = [(cos(vectors[q, :24], v[:24]) + cos(vectors[q, 24:], v[24:])) / 2
                    for v in vectors]
        assert scores[q][-1] >= np.sort(everyone)[-10] - 1e-5  # the exact top 10
    balanced = balance_parts(vectors, [24, 0, 8])
    np.testing.assert_allclose(balance_parts(balanced, [24, 0, 8]), balanced, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(balanced[:, 24:], axis=1), np.sqrt(0.5),
                               atol=1e-6)
    plain = UserIndex.build(keys, vectors, kind="flat")
    assert plain.metric == "cosine" and plain.parts is None
    assert [list(r) for r in plain.search(vectors[:5], 10)[0]] != [list(r) for r in found]
    index.save(str(tmp_path / "index"))
    loaded = UserIndex.load(str(tmp_path / "index"))
    assert loaded.metric == "part_cosine" and loaded.parts == parts
    assert loaded.neighbours("u1", 5) == index.neighbours("u1", 5)
    with pytest.raises(ValueError, match="do not add up"):
        UserIndex.build(keys, vectors, parts=[["mean", 24]])
    with pytest.raises(ValueError, match="needs the embedding's parts"):
        UserIndex.build(keys, vectors, metric="part_cosine")
    with pytest.raises(ValueError, match="widths"):
        balance_parts(vectors, [24])


def test_embedding_files_carry_their_parts(tmp_path):
    from autorisk_tf.embed import write_embeddings

    vectors = _vectors(20, dim=6)
    write_embeddings(str(tmp_path / "a"), [f"a{i}" for i in range(20)], vectors, {},
                     model="m1", parts=[["mean", 4], ["ids", 2]])
    write_embeddings(str(tmp_path / "b"), [f"b{i}" for i in range(20)], vectors, {},
                     model="m1", parts=[["mean", 4], ["ids", 2]])
    keys, got, model, parts = read_embeddings(str(tmp_path / "*.parquet"))
    assert len(keys) == 40 and model == "m1" and parts == [["mean", 4], ["ids", 2]]
    write_embeddings(str(tmp_path / "c"), [f"c{i}" for i in range(20)], vectors, {},
                     parts=[["mean", 3], ["ids", 3]])
    with pytest.raises(ValueError, match="different parts"):
        read_embeddings(str(tmp_path / "*.parquet"))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_adding_replacing_and_removing_equals_a_rebuild(kind):
    vectors = _vectors(3000, seed=1)
    keys = [f"u{i}" for i in range(3000)]
    params = {"nlist": 32} if kind == "ivfpq" else None
    index = UserIndex.build(keys[:2500], vectors[:2500], kind=kind, params=params)
    replaced = _vectors(100, seed=2)
    index.add(keys[:100], replaced)  # users embedded again
    index.add(keys[2500:], vectors[2500:])  # new users
    gone = keys[100:800]  # 700 of 3,000: HNSW rebuilds its graph past a fifth
    assert index.remove(gone + ["never-held"]) == 700
    final = {**dict(zip(keys, vectors, strict=True)), **dict(zip(keys[:100], replaced,
                                                                   strict=True))}
    for key in gone:
        del final[key]
    assert len(index) == len(final) and "u150" not in index and "u50" in index
    assert sorted(index.keys()) == sorted(final)
    live_keys, live = list(final), np.stack(list(final.values()))
    queries = np.concatenate([replaced[:20], vectors[2500:2520]])
    found, _ = index.search(queries, 10)
    assert not set(found.ravel()) & set(gone)
    truth = _exact(live_keys, live, queries, 10)
    if kind == "ivfpq":  # compressed codes: a rebuild is as approximate as the index
        rebuilt = UserIndex.build(live_keys, live, kind=kind, params=params)
        assert abs(_recall(found, truth) - _recall(rebuilt.search(queries, 10)[0], truth)) < 0.1
    else:
        assert _recall(found, truth) >= (1.0 if kind == "flat" else 0.98)
    if kind == "hnsw":
        assert not index._skipped  # rebuilt from its live vectors
    nearest = index.neighbours("u0", 1)[0][0]  # its new vector decides
    exact = _exact(live_keys, live, replaced[:1], 11)[0][1:]
    assert nearest == exact[0] if kind != "ivfpq" else nearest in exact


def test_hnsw_recall_at_10_against_exact_search():
    vectors = _vectors(20_000, dim=64, seed=3, clusters=400)
    keys = [f"u{i}" for i in range(20_000)]
    index = UserIndex.build(keys, vectors, kind="hnsw")
    queries = vectors[::200]
    assert _recall(index.search(queries, 10)[0], _exact(keys, vectors, queries, 10)) >= 0.95


def test_the_index_refuses_what_it_cannot_hold():
    index = UserIndex.build(["a", "b"], _vectors(2), kind="flat")
    with pytest.raises(SearchError, match="width 16 for an index of width 32"):
        index.add(["c"], np.ones((1, 16)))
    with pytest.raises(SearchError, match="NaN or infinite"):
        index.add(["c"], np.full((1, 32), np.nan))
    with pytest.raises(SearchError, match="not in the index"):
        index.neighbours("nobody")
    with pytest.raises(ValueError, match="duplicate key"):
        UserIndex.build(["a", "a"], _vectors(2))


def test_saved_index_loads_in_a_fresh_process(tmp_path):
    vectors = _vectors(400, seed=4)
    keys = [f"u{i}" for i in range(400)]
    index = UserIndex.build(keys, vectors, kind="hnsw", model="abc123")
    index.remove(["u1"])
    index.save(str(tmp_path / "index"))
    with pytest.raises(ValueError, match="already holds a finished run"):
        index.save(str(tmp_path / "index"))
    out = subprocess.run(
        [sys.executable, "-m", "autorisk_tf.search", "query", "--index",
         str(tmp_path / "index"), "--key", "u7", "--k", "5", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (result,) = json.loads(out.stdout)
    want = index.neighbours("u7", 5)
    assert [n for n, _ in result["neighbours"]] == [n for n, _ in want]
    np.testing.assert_allclose([s for _, s in result["neighbours"]], [s for _, s in want],
                               atol=1e-6)
    loaded = UserIndex.load(str(tmp_path / "index"))
    assert loaded.model == "abc123" and "u1" not in loaded and len(loaded) == 399
    (tmp_path / "index" / "keys.parquet").write_bytes(b"changed")
    with pytest.raises(ValueError, match="keys.parquet"):
        UserIndex.load(str(tmp_path / "index"))


def test_queries_are_served_while_users_are_replaced():
    vectors = _vectors(2000, seed=5)
    keys = [f"u{i}" for i in range(2000)]
    index = UserIndex.build(keys, vectors, kind="hnsw")
    errors, answers = [], []

    def query():
        try:
            for i in range(200):
                found, _ = index.search(vectors[i:i + 1], 5)
                answers.append(list(found[0]))
        except Exception as e:  # noqa: BLE001 - any failure fails the test below
            errors.append(e)

    def replace():
        try:
            rng = np.random.default_rng(6)
            for i in range(200):
                index.add([f"u{i}"], rng.normal(size=(1, 32)))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=query) for _ in range(3)]
    threads.append(threading.Thread(target=replace))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(answers) == 600 and all(len(a) == 5 and None not in a for a in answers)
    assert len(index) == 2000


def _write(path, keys, vectors, model, beam_layout=False):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autorisk_tf.contract import FINGERPRINT_METADATA
    from autorisk_tf.embed import write_embeddings

    if not beam_layout:
        write_embeddings(str(path), keys, vectors, {}, model=model)
        return str(path) + ".parquet"
    table = pa.table({"key": keys, "length": [3] * len(keys),
                      "embedding": pa.array(list(vectors), pa.list_(pa.float32()))})
    pq.write_table(table.replace_schema_metadata({FINGERPRINT_METADATA: model.encode()}),
                   str(path) + ".parquet")
    return str(path) + ".parquet"


def test_command_line_builds_queries_adds_and_removes(tmp_path):
    vectors = _vectors(300, seed=7)
    keys = [f"u{i}" for i in range(300)]
    first = _write(tmp_path / "a", keys[:200], vectors[:200], "m1")
    second = _write(tmp_path / "b", keys[200:], vectors[200:], "m1", beam_layout=True)
    got_keys, got, model, parts = read_embeddings(f"{first},{second}")
    assert got_keys == keys and model == "m1" and parts is None
    np.testing.assert_array_equal(got, vectors)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "autorisk_tf.search", *args],
                               capture_output=True, text=True, cwd=ROOT, timeout=300)

    index = str(tmp_path / "index")
    done = run("build", "--embeddings", first, "--output", index)
    assert done.returncode == 0, done.stderr
    assert "indexed 200 users (flat, cosine, width 32, model m1)" in done.stdout
    done = run("add", "--index", index, "--embeddings", second)
    assert "added 100 users, replaced 0" in done.stdout, done.stderr
    other = _write(tmp_path / "c", keys[:5], vectors[:5], "m2")
    done = run("add", "--index", index, "--embeddings", other)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {other} comes from model m2, the index from model m1: rebuild the index "
        "or use that model")
    done = run("remove", "--index", index, "--keys", "u1,u2,zz")
    assert "removed 2 users" in done.stdout and "298 users" in done.stdout
    done = run("query", "--index", index, "--key", "u5", "--k", "3")
    assert done.stdout.splitlines()[0] == "nearest users of u5:"
    want = UserIndex.load(index).neighbours("u5", 3)
    assert [line.split()[1] for line in done.stdout.splitlines()[1:]] == [n for n, _ in want]
    done = run("query", "--index", index, "--key", "nobody")
    assert done.returncode == 2 and "key 'nobody' is not in the index" in done.stderr
