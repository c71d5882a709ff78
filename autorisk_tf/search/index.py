"""A nearest-neighbour index of user embeddings, keyed by user, on faiss.

Kinds, chosen by size with `kind="auto"` (`choose_kind`):
- `flat`: exact search (`IndexFlat`), below `FLAT_BELOW` users, where it answers in
  milliseconds anyway;
- `hnsw`: a graph (`IndexHNSWFlat`, full vectors), up to `HNSW_BELOW` users: recall@10 above
  0.95 at a small fraction of the exact search's time;
- `ivfpq`: inverted lists of product-quantised codes (`IndexIVFPQ`) beyond, where full
  vectors no longer fit in memory: m bytes a user instead of 4 x dim.

Users are added, replaced (the same key again: its new vector wins) and removed without a
rebuild. faiss's HNSW cannot delete, so a removed or replaced user's old entry is skipped
at search time (an `IDSelector`) and the graph is rebuilt from its own vectors once a fifth
of it is skipped. Metrics (higher is nearer for all three):
- `cosine`: vectors are L2-normalised and compared by inner product;
- `part_cosine`: each part of the embedding (`parts`: the pooled state, the attention
  read-out, the bag of ids, ...) is L2-normalised and weighs alike
  (`neighbours.balance_parts`): the score is the mean of the parts' cosine similarities, so
  the part with the widest spread of values does not decide alone. `auto` picks it when the
  embedding files name their parts;
- `l2`: scores are negative squared distances.

An index knows the model its vectors came from (`model`, the encoder's fingerprint), so a
query embedded by another model version can be refused.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from autorisk_tf.data import output_folder
from autorisk_tf.neighbours import balance_parts

KINDS = ("auto", "flat", "hnsw", "ivfpq")
METRICS = ("auto", "cosine", "part_cosine", "l2")
FLAT_BELOW = 100_000
HNSW_BELOW = 10_000_000
FORMAT = 1
INDEX_FILE = "index.faiss"
KEYS_FILE = "keys.parquet"
META_FILE = "index.json"
DEFAULT_PARAMS = {"hnsw": {"m": 32, "ef_construction": 80, "ef_search": 128},
                  "ivfpq": {"nlist": 0, "code_bytes": 0, "bits": 0, "nprobe": 32}}
_REBUILD_SHARE = 0.2


class SearchError(ValueError):
    """A request the index cannot serve (unknown key, wrong width); one-line message."""


def choose_kind(count: int) -> str:
    """The kind `auto` picks for `count` users (see the module docstring)."""
    if count < FLAT_BELOW:
        return "flat"
    return "hnsw" if count < HNSW_BELOW else "ivfpq"


def _faiss():
    import faiss

    return faiss


def _ivfpq_params(count: int, dim: int, params: dict) -> dict:
    """IVF-PQ parameters: about 4 sqrt(n) lists, dim/4 codes of up to 8 bits, unless given."""
    params = dict(params)
    if not params.get("nlist"):
        params["nlist"] = int(max(16, min(65536, 4 * np.sqrt(max(count, 1)))))
    if not params.get("code_bytes"):
        target = max(1, dim // 4)
        params["code_bytes"] = max(m for m in range(1, target + 1) if dim % m == 0)
    if not params.get("bits"):  # 2^bits centroids per code byte, 39 training points each
        params["bits"] = int(min(8, max(4, np.log2(max(count, 1) / 39))))
    return params


class UserIndex:
    """Nearest users by embedding, with add, replace and remove.

    Args:
        dim: int. Embedding width.
        metric: str. `cosine`, `part_cosine` or `l2` (`auto` is resolved by `build`).
            Defaults to `cosine`.
        kind: str. `flat`, `hnsw` or `ivfpq` (`auto` is resolved by `build`).
        params: dict or None. Kind parameters (`DEFAULT_PARAMS`); missing ones default.
        model: str. Fingerprint of the model that made the vectors ("" if unknown).
        parts: list or None. The embedding's `[[name, width], ...]` (needed by
            `part_cosine`; kept for the record otherwise).

    Example:
    ```python
    index = UserIndex.build(keys, vectors, model="3f2a...")
    index.neighbours("u00000042", k=5)   # [(key, similarity), ...], itself left out
    index.add(["u00000042"], [new_vector])  # replaces its vector
    index.save("index/")
    ```
    """

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "flat",
                 params: dict | None = None, model: str = "", parts: list | None = None):
        if metric not in METRICS[1:]:
            raise ValueError(f"metric must be one of {METRICS[1:]}, got {metric!r}")
        if kind not in KINDS[1:]:
            raise ValueError(f"kind must be one of {KINDS[1:]}, got {kind!r}")
        if parts is not None and sum(width for _, width in parts) != int(dim):
            raise ValueError(f"parts {parts} do not add up to the width {dim}")
        if metric == "part_cosine" and not parts:
            raise ValueError("metric part_cosine needs the embedding's parts")
        self.dim, self.metric, self.kind, self.model = int(dim), metric, kind, model
        self.parts = parts
        self.params = {**DEFAULT_PARAMS.get(kind, {}), **(params or {})}
        self._ids: dict[str, int] = {}  # live key -> faiss id
        self._keys: dict[int, str] = {}  # live faiss id -> key
        self._skipped: set[int] = set()  # hnsw ids of removed or replaced entries
        self._next_id = 0
        self.sources: list[str] = []  # the files the vectors came from
        self._lock = threading.RLock()
        self._index = None

    # Building and loading.

    @classmethod
    def build(cls, keys, vectors, metric: str = "auto", kind: str = "auto",
              params: dict | None = None, model: str = "", parts: list | None = None,
              ) -> UserIndex:
        """An index of `vectors` [N, dim] under `keys` (unique).

        Args:
            keys: sequence of str. One key per row.
            vectors: float [N, dim]. The embeddings.
            metric: str. `auto` (`part_cosine` with `parts`, else `cosine`), `cosine`,
                `part_cosine` or `l2`.
            kind: str. `auto` (by size: `choose_kind`), `flat`, `hnsw` or `ivfpq`.
            params: dict or None. Kind parameters.
            model: str. Fingerprint of the model that made the vectors.
            parts: list or None. The embedding's `[[name, width], ...]`.

        Raises:
            ValueError: duplicate keys, a row count that differs from the keys', or
                non-finite values.
        """
        keys = [str(key) for key in keys]
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"{len(keys) - len(set(keys))} duplicate key(s)")
        if metric == "auto":
            metric = "part_cosine" if parts else "cosine"
        index = cls(vectors.shape[1], metric, choose_kind(len(keys)) if kind == "auto" else kind,
                    params, model, parts)
        index._index = index._new_faiss_index(vectors)
        index.add(keys, vectors)
        return index

    def _prepared(self, vectors) -> np.ndarray:
        vectors = np.ascontiguousarray(np.asarray(vectors, np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise SearchError(f"vectors of width {vectors.shape[-1] if vectors.ndim else 0} "
                              f"for an index of width {self.dim}")
        if not np.isfinite(vectors).all():
            raise SearchError("vectors hold NaN or infinite values")
        if self.metric == "cosine":
            vectors = vectors.copy()
            _faiss().normalize_L2(vectors)
        elif self.metric == "part_cosine":
            vectors = balance_parts(vectors, [width for _, width in self.parts])
        return vectors

    def _new_faiss_index(self, sample: np.ndarray):
        """An empty faiss index of this kind (IVF-PQ trained on `sample`)."""
        faiss = _faiss()
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlat(self.dim, metric))
        if self.kind == "hnsw":
            graph = faiss.IndexHNSWFlat(self.dim, self.params["m"], metric)
            graph.hnsw.efConstruction = self.params["ef_construction"]
            return faiss.IndexIDMap2(graph)
        self.params = _ivfpq_params(len(sample), self.dim, self.params)
        quantizer = faiss.IndexFlat(self.dim, metric)
        ivf = faiss.IndexIVFPQ(quantizer, self.dim, self.params["nlist"],
                               self.params["code_bytes"], self.params["bits"], metric)
        training = self._prepared(sample)
        if len(training) < self.params["nlist"]:
            raise ValueError(f"ivfpq needs at least nlist={self.params['nlist']} vectors to "
                             f"train, got {len(training)}")
        rng = np.random.default_rng(0)
        if len(training) > 256 * self.params["nlist"]:
            training = training[rng.choice(len(training), 256 * self.params["nlist"],
                                           replace=False)]
        ivf.train(training)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        return ivf

    # Changes.

    def add(self, keys, vectors) -> None:
        """Adds users; a key already held gets the new vector (its old one is dropped).

        Raises:
            SearchError: vectors of the wrong width, non-finite values, or a key twice.
        """
        keys = [str(key) for key in keys]
        vectors = self._prepared(vectors)
        if len(vectors) != len(keys):
            raise SearchError(f"{len(keys)} keys for {len(vectors)} vectors")
        if len(set(keys)) != len(keys):
            raise SearchError("a key appears twice in one add")
        with self._lock:
            self._drop([key for key in keys if key in self._ids])
            ids = np.arange(self._next_id, self._next_id + len(keys), dtype=np.int64)
            self._next_id += len(keys)
            if len(keys):
                self._index.add_with_ids(vectors, ids)
            for key, i in zip(keys, ids.tolist(), strict=True):
                self._ids[key], self._keys[i] = i, key
            self._maybe_rebuild()

    def remove(self, keys) -> int:
        """Removes users; returns how many were held (unknown keys are ignored)."""
        with self._lock:
            held = [str(key) for key in keys if str(key) in self._ids]
            self._drop(held)
            self._maybe_rebuild()
            return len(held)

    def _drop(self, keys: list[str]) -> None:
        ids = [self._ids.pop(key) for key in keys]
        for i in ids:
            del self._keys[i]
        if not ids:
            return
        if self.kind == "hnsw":
            self._skipped.update(ids)
        else:
            self._index.remove_ids(np.asarray(ids, np.int64))

    def _maybe_rebuild(self) -> None:
        """Rebuilds an HNSW graph from its live vectors once a fifth of it is skipped."""
        if self.kind != "hnsw" or len(self._skipped) <= _REBUILD_SHARE * max(
                len(self._ids) + len(self._skipped), 1):
            return
        ids = np.fromiter(self._keys, np.int64, len(self._keys))
        vectors = (np.vstack([self._index.reconstruct(int(i)) for i in ids]) if len(ids)
                   else np.zeros((0, self.dim), np.float32))
        self._index = self._new_faiss_index(vectors)
        if len(ids):
            self._index.add_with_ids(vectors, ids)
        self._skipped.clear()

    # Queries.

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key) -> bool:
        return str(key) in self._ids

    def keys(self) -> list[str]:
        """Every key held, in the order they were added."""
        with self._lock:
            return [self._keys[i] for i in sorted(self._keys)]

    def vector(self, key: str) -> np.ndarray:
        """The stored vector of a key, as searched (normalised, approximate with ivfpq).

        Raises:
            SearchError: the key is not in the index.
        """
        with self._lock:
            if str(key) not in self._ids:
                raise SearchError(f"key {key!r} is not in the index")
            return self._index.reconstruct(self._ids[str(key)])

    def search(self, vectors, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest users of each query vector.

        Args:
            vectors: float [Q, dim]. Query embeddings (normalised here as the metric asks).
            k: int. Neighbours per query.

        Returns:
            `(keys, scores)`: object [Q, k] and float32 [Q, k], nearest first (cosine
            similarity, or negative squared distance); `None` and NaN past the users held.
        """
        faiss = _faiss()
        queries = self._prepared(vectors)
        if k < 1:
            raise SearchError(f"k must be at least 1, got {k}")
        with self._lock:
            if self.kind == "hnsw":
                params = faiss.SearchParametersHNSW(efSearch=max(self.params["ef_search"], k))
                if self._skipped:
                    skipped = np.fromiter(self._skipped, np.int64, len(self._skipped))
                    batch = faiss.IDSelectorBatch(skipped)
                    params.sel = faiss.IDSelectorNot(batch)
                scores, ids = self._index.search(queries, k, params=params)
            else:
                if self.kind == "ivfpq":
                    self._index.nprobe = self.params["nprobe"]
                scores, ids = self._index.search(queries, k)
            keys = np.array([[self._keys.get(int(i)) for i in row] for row in ids], object)
        scores = np.where(ids < 0, np.nan, scores).astype(np.float32)
        if self.metric == "l2":
            scores = -scores
        return keys, scores

    def neighbours(self, key: str, k: int = 10) -> list[tuple[str, float]]:
        """The k nearest other users of a held key, nearest first.

        Raises:
            SearchError: the key is not in the index.
        """
        with self._lock:
            query = self.vector(key)[None, :]
            keys, scores = self.search(query, k + 1)
        pairs = [(str(n), float(s)) for n, s in zip(keys[0], scores[0], strict=True)
                 if n is not None and n != str(key)]
        return pairs[:k]

    # Files.

    def save(self, folder: str, overwrite: bool = False, sources: list[str] | None = None,
             ) -> None:
        """Writes `index.faiss`, `keys.parquet`, `index.json` and the `_SUCCESS` manifest.

        The folder is written whole or not at all (`output_folder`); a used folder needs
        `overwrite`.

        Args:
            folder: str. Local output folder.
            overwrite: bool. Replace an index already there.
            sources: list of str or None. The files the vectors came from (recorded).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        staging = output_folder.claim(folder, overwrite)
        os.makedirs(staging, exist_ok=True)
        with self._lock:
            _faiss().write_index(self._index, os.path.join(staging, INDEX_FILE))
            ids = sorted(self._keys)
            pq.write_table(pa.table({"id": pa.array(ids, pa.int64()),
                                     "key": pa.array([self._keys[i] for i in ids],
                                                     pa.string())}),
                           os.path.join(staging, KEYS_FILE))
            meta = {"format": FORMAT, "kind": self.kind, "metric": self.metric,
                    "dim": self.dim, "count": len(self._ids), "model": self.model,
                    "parts": self.parts,
                    "params": self.params, "next_id": self._next_id,
                    "skipped": sorted(self._skipped), "sources": sources or []}
        with open(os.path.join(staging, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        output_folder.publish(staging, folder)

    @classmethod
    def load(cls, folder: str) -> UserIndex:
        """Reads an index that `save` wrote.

        Raises:
            output_folder.OutputFolderError: no manifest, or files that differ from it.
            ValueError: an index format this version cannot read.
        """
        import pyarrow.parquet as pq

        paths = [os.path.join(folder, name) for name in (INDEX_FILE, KEYS_FILE, META_FILE)]
        output_folder.check_shards(paths)
        with open(paths[2], encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: index format {meta.get('format')!r}, this version "
                             f"reads {FORMAT}")
        index = cls(meta["dim"], meta["metric"], meta["kind"], meta["params"], meta["model"],
                    meta.get("parts"))
        index._index = _faiss().read_index(paths[0])
        table = pq.read_table(paths[1])
        for i, key in zip(table["id"].to_pylist(), table["key"].to_pylist(), strict=True):
            index._ids[key], index._keys[i] = i, key
        index._next_id = meta["next_id"]
        index._skipped = set(meta["skipped"])
        index.sources = meta["sources"]
        return index
