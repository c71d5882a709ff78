"""Reads back the scalars a pre-training run logged (`<model_dir>/logs`)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np


def read_scalars(model_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar of the run's TensorBoard logs.

    Args:
        model_dir: str. The run folder of `autorisk_tf.train`.

    Returns:
        `{tag: (steps int [T], values float [T])}`, sorted by step (a resumed run's repeated
        steps keep their last value). Empty when there are no logs.
    """
    import tensorflow as tf

    points: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "logs", "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                          else float(value.simple_value))
                points.setdefault(value.tag, {})[int(event.step)] = number
    return {tag: (np.array(sorted(steps)), np.array([steps[s] for s in sorted(steps)]))
            for tag, steps in points.items()}


def read_final_metrics(model_dir: str) -> dict[str, float]:
    """The run's `metrics.json` (last step and held-out evaluation); empty when absent."""
    path = os.path.join(model_dir, "metrics.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
