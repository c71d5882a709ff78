"""Cosine nearest neighbours of user embeddings, k-NN label agreement, sequence analogy.

Sequence analogy: emb(a) - emb(b) + emb(d) should land near emb(c). Used by
`python -m autorisk_tf.report`; plain NumPy, so any embedding (the encoder's, the
bag-of-events baseline's) goes through the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def unit_rows(x) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as dense float64.

    Args:
        x: [N, E] dense array or scipy sparse matrix.

    Returns:
        float64 [N, E].
    """
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def balance_parts(x, widths: Sequence[int]) -> np.ndarray:
    """Each part of every row scaled to unit norm, then all by 1 / sqrt(parts).

    The inner product of two balanced rows is the mean over parts of the parts' cosine
    similarities, so a part with a wide spread of values (a pooled state) does not drown
    one with a narrow spread (the bag of ids). Zero parts stay zero; a balanced row is
    balanced again unchanged.

    Args:
        x: float [N, E]. Embeddings.
        widths: sequence of int. Width of each part, in order; they sum to E (zero-width
            parts are allowed).

    Returns:
        float32 [N, E].

    Raises:
        ValueError: the widths do not sum to E.
    """
    x = np.asarray(x, np.float32)
    if sum(widths) != x.shape[-1]:
        raise ValueError(f"parts of widths {list(widths)} for vectors of width {x.shape[-1]}")
    parts = [w for w in widths if w]
    out, start = np.empty_like(x), 0
    for width in parts:
        out[:, start:start + width] = unit_rows(x[:, start:start + width]) / np.sqrt(
            len(parts))
        start += width
    return out


def nearest(x, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int]] = ()
            ) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of x nearest (by cosine) to each query vector.

    Args:
        x: [N, E]. Candidate embeddings.
        queries: float [Q, E]. Query vectors.
        k: int. Neighbours per query.
        exclude: per query, row indices of x that may not be returned (such as the query
            user itself).

    Returns:
        `(indices, similarities)`: int [Q, k] and float [Q, k], most similar first.
    """
    similarity = unit_rows(queries) @ unit_rows(x).T
    for row, banned in enumerate(exclude):
        similarity[row, list(banned)] = -np.inf
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def knn_label_agreement(x, labels: np.ndarray, k: int = 10) -> tuple[float, float]:
    """How often a user's k nearest neighbours share its label, against chance.

    Args:
        x: [N, E]. Embeddings.
        labels: [N]. Labels (any hashable values; NaN or "" rows are left out).
        k: int. Neighbours per user.

    Returns:
        `(agreement, chance)`: the mean share of neighbours with the same label, and the
        share expected of random neighbours (the sum of squared label frequencies).
    """
    labels = np.asarray(labels, dtype=object)
    keep = np.array([not (v == "" or (isinstance(v, float) and np.isnan(v))) for v in labels])
    x, labels = unit_rows(x)[keep], labels[keep]
    index, _ = nearest(x, x, k, exclude=[[i] for i in range(len(x))])
    agreement = float(np.mean(labels[index] == labels[:, None]))
    _, counts = np.unique(labels.astype(str), return_counts=True)
    return agreement, float(np.sum((counts / counts.sum()) ** 2))


def analogy_ranks(keys: Sequence[str], x, quadruples: Sequence[dict]) -> list[dict]:
    """Where c ranks among all users for the query emb(a) - emb(b) + emb(d).

    Candidates are all users but a, b and d; the rank counts from 1 (rank 1: c is the
    nearest by cosine).

    Args:
        keys: sequence of str. The user of each row of x.
        x: [N, E]. Embeddings.
        quadruples: sequence of dict with keys `a`, `b`, `c`, `d` (user keys); rows whose
            users are not all in `keys` are skipped.

    Returns:
        One dict per usable quadruple: its fields plus `rank` and `top` (the key of the
        nearest candidate).
    """
    row_of = {key: i for i, key in enumerate(keys)}
    x = unit_rows(x)
    usable = [q for q in quadruples if all(q[r] in row_of for r in "abcd")]
    if not usable:
        return []
    rows = np.array([[row_of[q[r]] for r in "abcd"] for q in usable])
    queries = x[rows[:, 0]] - x[rows[:, 1]] + x[rows[:, 3]]
    similarity = unit_rows(queries) @ x.T
    results = []
    for i, q in enumerate(usable):
        sims = similarity[i].copy()
        sims[rows[i, [0, 1, 3]]] = -np.inf
        rank = 1 + int(np.sum(sims > sims[rows[i, 2]]))
        results.append({**q, "rank": rank, "top": keys[int(np.argmax(sims))]})
    return results


def recall_at(ranks: Sequence[int], k: int) -> float:
    """Share of ranks at or below k."""
    return float(np.mean(np.asarray(ranks) <= k)) if len(ranks) else float("nan")


def random_recall_at(num_users: int, k: int) -> float:
    """Recall@k of a random ranking of the num_users - 3 analogy candidates."""
    return min(k / max(num_users - 3, 1), 1.0)


def ring_recall(x, keys: Sequence[str], rings: dict[str, int], k: int = 20) -> float:
    """From each ring member, the share of its ring among its k nearest other users.

    Args:
        x: [N, E]. Embeddings of every user (ring members and the others).
        keys: sequence of str. The users' keys, in the rows' order.
        rings: dict. Ring member key -> ring id (members missing from `keys` are skipped).
        k: int. Neighbours per member.

    Returns:
        The mean over members of (ring-mates among the k nearest) / (ring-mates held).
    """
    row = {key: i for i, key in enumerate(keys)}
    members = [key for key in rings if key in row]
    if not members:
        raise ValueError("no ring member among the keys")
    queries = [row[key] for key in members]
    found, _ = nearest(x, unit_rows(x)[queries], k, exclude=[[i] for i in queries])
    shares = []
    for key, neighbours in zip(members, found, strict=True):
        mates = {row[m] for m in members if rings[m] == rings[key] and m != key}
        if mates:
            shares.append(len(mates & set(neighbours.tolist())) / min(len(mates), k))
    return float(np.mean(shares))
