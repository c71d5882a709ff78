"""Reads embedding tables, with the fingerprint of the model that made them and their parts.

`autorisk_tf.embed` writes `e0`, `e1`, ... columns; `beam.embed` one `embedding` list column.
"""

from __future__ import annotations

import numpy as np

from autorisk_tf.contract import FINGERPRINT_METADATA, PARTS_METADATA
from autorisk_tf.data import fileio
from autorisk_tf.data.fingerprint import read_parts


def read_embeddings(pattern: str) -> tuple[list[str], np.ndarray, str, list | None]:
    """Keys, vectors, model fingerprint and embedding parts of some embedding Parquet files.

    Args:
        pattern: str. A glob, or several comma-separated.

    Returns:
        `(keys, vectors float32 [N, E], model, parts)`; `model` is "" and `parts` None
        when the files carry no fingerprint or parts (`[[name, width], ...]`).

    Raises:
        ValueError: no file matches, a file has no embedding columns, the widths differ,
            a key appears twice, or the files come from different models.
    """
    import pyarrow.parquet as pq

    paths = sorted({p for part in pattern.split(",") if part for p in fileio.glob(part)})
    if not paths:
        raise ValueError(f"no embedding file matches {pattern}")
    keys, blocks, models, parts = [], [], set(), set()
    for path in paths:
        table = pq.read_table(path)
        metadata = table.schema.metadata or {}
        models.add(metadata.get(FINGERPRINT_METADATA, b"").decode())
        parts.add(metadata.get(PARTS_METADATA, b"").decode())
        if "embedding" in table.column_names:
            column = table["embedding"].combine_chunks()
            width = len(column[0]) if len(column) else 0
            block = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        else:
            names = [n for n in table.column_names if n[:1] == "e" and n[1:].isdigit()]
            if not names:
                raise ValueError(f"{path} has neither an `embedding` column nor e0, e1, ...")
            names.sort(key=lambda n: int(n[1:]))
            block = np.column_stack([table[n].to_numpy() for n in names])
        keys.extend(str(k) for k in table["key"].to_pylist())
        blocks.append(np.asarray(block, np.float32))
    widths = {block.shape[1] for block in blocks if len(block)}
    if len(widths) > 1:
        raise ValueError(f"embedding widths differ across {pattern}: {sorted(widths)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{len(keys) - len(set(keys))} key(s) appear twice in {pattern}")
    known = models - {""}
    if len(known) > 1:
        raise ValueError(f"{pattern} mixes embeddings of {len(known)} models: "
                         f"{sorted(known)}")
    layouts = parts - {""}
    if len(layouts) > 1:
        raise ValueError(f"{pattern} mixes embeddings with different parts: {sorted(layouts)}")
    return (keys, np.concatenate(blocks), known.pop() if known else "",
            read_parts(layouts.pop()) if layouts else None)
