"""Random id batches shaped like the EventPreprocessor's output, for encoder tests."""

import numpy as np

FEATURES = [
    {"name": "event_type", "kind": "categorical", "vocab_size": 12},
    {"name": "amount", "kind": "numeric", "vocab_size": 9},
    {"name": "item", "kind": "text", "vocab_size": 30},
    {"name": "time_delta", "kind": "time", "vocab_size": 28},
]
NO_TEXT = [spec for spec in FEATURES if spec["kind"] != "text"]
MAX_TOKENS = 6


def random_ids(features, lengths, steps, seed=0):
    """A batch of random ids: real steps drawn from the vocabulary, padded steps 0.

    Args:
        features: list of dict. Feature specs.
        lengths: list of int. Real length of each row.
        steps: int. Padded length T.
        seed: int. Random seed.

    Returns:
        Dict of int32 arrays [B, T] ([B, T, MAX_TOKENS] for text) and `padding_mask`.
    """
    rng = np.random.default_rng(seed)
    mask = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    out = {"padding_mask": mask}
    for spec in features:
        if spec["kind"] == "text":
            ids = rng.integers(4, spec["vocab_size"], size=(len(lengths), steps, MAX_TOKENS))
            counts = rng.integers(1, MAX_TOKENS + 1, size=(len(lengths), steps))
            ids = np.where(np.arange(MAX_TOKENS) < counts[..., None], ids, 0)
            out[spec["name"]] = np.where(mask[..., None], ids, 0).astype("int32")
        else:
            ids = rng.integers(4, spec["vocab_size"], size=(len(lengths), steps))
            ids = np.where(rng.random(ids.shape) < 0.1, 1, ids)  # some missing values
            out[spec["name"]] = np.where(mask, ids, 0).astype("int32")
    return out


def alone_and_padded(features, length, seed=0):
    """One sequence alone, and the same sequence as row 1 of a batch padded to 3x length."""
    alone = random_ids(features, [length], length, seed)
    batch = random_ids(features, [2 * length, length, 3 * length], 3 * length, seed + 1)
    for name, value in alone.items():
        batch[name][1] = 0
        batch[name][1, :length] = value[0]
    return alone, batch
