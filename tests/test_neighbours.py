"""Nearest neighbours, k-NN label agreement, analogy ranks and the bag-of-events baseline."""

import numpy as np
import pytest

from autorisk_tf import evaluate, neighbours
from autorisk_tf.data.schema import parse_schema


def test_nearest_orders_by_cosine_and_excludes_rows():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    index, sims = neighbours.nearest(x, x[:1], k=3, exclude=[[0]])
    assert index.tolist() == [[1, 2, 3]]
    np.testing.assert_allclose(sims[0], [0.9 / np.hypot(0.9, 0.1), 0.0, -1.0], atol=1e-12)


def test_exact_analogy_ranks_first_and_a_wrong_one_does_not():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16))
    p, q, x_factor, y_factor = base[0], base[1], base[2] * 2, base[3] * 2
    x = np.vstack([base[4:], [p + x_factor, p + y_factor, q + x_factor, q + y_factor]])
    keys = [f"u{i}" for i in range(len(x))]
    quadruple = {"a": keys[-4], "b": keys[-3], "c": keys[-2], "d": keys[-1], "factor": "f"}
    ranked = neighbours.analogy_ranks(keys, x, [quadruple])
    assert ranked[0]["rank"] == 1 and ranked[0]["top"] == keys[-2]
    shuffled = dict(quadruple, c=keys[0])  # a user unrelated to the analogy
    assert neighbours.analogy_ranks(keys, x, [shuffled])[0]["rank"] > 1
    missing = dict(quadruple, a="nobody")
    assert neighbours.analogy_ranks(keys, x, [missing]) == []


def test_recall_and_the_random_baseline():
    assert neighbours.recall_at([1, 2, 11, 30], 1) == 0.25
    assert neighbours.recall_at([1, 2, 11, 30], 10) == 0.5
    assert neighbours.random_recall_at(103, 10) == pytest.approx(0.1)
    # The formula matches a simulated random ranking.
    rng = np.random.default_rng(1)
    ranks = [int(rng.integers(1, 101)) for _ in range(20000)]
    assert neighbours.recall_at(ranks, 10) == pytest.approx(
        neighbours.random_recall_at(103, 10), abs=0.01)


def test_knn_agreement_is_high_for_clusters_and_at_chance_for_noise():
    rng = np.random.default_rng(2)
    labels = np.repeat([0.0, 1.0], 100)
    clustered = rng.normal(size=(200, 8)) + labels[:, None] * 6
    agreement, chance = neighbours.knn_label_agreement(clustered, labels, k=5)
    assert chance == pytest.approx(0.5)
    assert agreement > 0.95
    agreement, _ = neighbours.knn_label_agreement(rng.normal(size=(200, 8)), labels, k=5)
    assert abs(agreement - 0.5) < 0.1
    with_missing = labels.copy()
    with_missing[:10] = np.nan
    _, chance = neighbours.knn_label_agreement(clustered, with_missing, k=5)
    assert chance == pytest.approx((90 / 190) ** 2 + (100 / 190) ** 2)


def test_bag_of_events_counts_values_and_numeric_deciles():
    schema = parse_schema("""
key: k
timestamp: {column: t}
fields:
  - {name: kind, kind: categorical}
  - {name: amount, kind: numeric}
  - {name: item, kind: text}
""")
    sequences = [
        {"key": "u1", "event/kind": np.array(["pay", "pay", "logon"], dtype=object),
         "event/amount": np.array([1.0, 100.0, np.nan]),
         "event/item": np.array(["tea", "", ""], dtype=object)},
        {"key": "u2", "event/kind": np.array(["logon"], dtype=object),
         "event/amount": np.array([np.nan]), "event/item": np.array([""], dtype=object)},
    ]
    keys, bag = evaluate.bag_of_events(sequences, schema)
    assert keys.tolist() == ["u1", "u2"]
    dense = bag.toarray()
    # u1: kind=pay x2, kind=logon, two amount deciles (lowest and highest), item=tea.
    assert sorted(dense[0][dense[0] > 0].tolist()) == [1, 1, 1, 1, 2]
    assert dense[1].sum() == 1  # one logon; a missing amount and an empty item count nothing


def test_ring_recall_counts_ring_mates_among_the_nearest():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    x = np.concatenate([np.repeat(centres, 4, axis=0) + 0.01 * rng.normal(size=(12, 8)),
                        rng.normal(size=(50, 8))])
    keys = [f"k{i}" for i in range(62)]
    rings = {f"k{i}": i // 4 for i in range(12)}
    assert neighbours.ring_recall(x, keys, rings, k=3) == 1.0
    assert neighbours.ring_recall(x, keys, {**rings, "k20": 0}, k=3) < 1.0  # an outsider
    assert neighbours.ring_recall(rng.normal(size=(62, 8)), keys, rings, k=3) < 0.5
