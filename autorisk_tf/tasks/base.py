"""What every pre-training task provides, and what its loss reads of one training step.

The loop knows tasks only through this shape: it builds each registered task's heads,
merges their inputs into one example per global batch, and adds up their weighted losses.
A task is one module with a `Task` subclass plus one line in `autorisk_tf.tasks.TASKS`.
"""

from __future__ import annotations

import tensorflow as tf


class StepContext:
    """One replica's rows of a training step, with encoder passes that tasks share.

    Two tasks that read the same inputs (masked events and bag of ids both read the masked
    pass) get one encoder pass between them; a task whose weight is 0 at a step asks for
    none.

    Args:
        example: dict. This replica's rows: every active task's inputs.
        encode: callable. Inputs -> the encoder's outputs (`sequence`, `embedding`), in
            training mode.
        replicas: int. Replicas in sync (tasks that gather embeddings across replicas
            divide their loss by it).
        global_batch: int. Sequences in the global batch.
    """

    def __init__(self, example: dict, encode, replicas: int, global_batch: int):
        self.example = example
        self.replicas = replicas
        self.global_batch = global_batch
        self._encode = encode
        self._passes = {}

    def encoded(self, key: str) -> dict:
        """The encoder's outputs on `example[key]`, computed once per step."""
        if key not in self._passes:
            self._passes[key] = self._encode(self.example[key], training=True)
        return self._passes[key]

    def gathered(self, tensor: tf.Tensor) -> tf.Tensor:
        """`tensor` [b, ...] of every replica, concatenated (itself on one replica)."""
        if self.replicas == 1:
            return tensor
        return tf.distribute.get_replica_context().all_gather(tensor, axis=0)


class Task:
    """A pre-training task: its config section, inputs, heads, loss and weight over steps.

    Subclasses set the class attributes and implement `make_inputs` and `loss_and_metrics`;
    the rest has defaults.

    Attributes:
        name: str. The task's config section (`masked_event:`) and its name in logs.
        config_class: type. The frozen dataclass of that section.
        seed_offset: int. Added to both words of the batch seed for this task's random
            choices, so tasks draw independent streams.
        progress_metrics: tuple of str. Metrics shown on the progress bar.

    Args:
        config: TrainConfig. The whole configuration (a task may read `model` and
            `curriculum` as well as its own section).
        feature_specs: list of dict. The model's features.
        encoder: SequenceEncoder. The built encoder (its widths size the heads).
        dtype: str or None. The heads' dtype policy (None: float32).
    """

    name = ""
    config_class: type = object
    seed_offset = 0
    progress_metrics: tuple = ()

    def __init__(self, config, feature_specs: list[dict], encoder, dtype=None):
        self.config = config
        self.settings = getattr(config, self.name)
        self.feature_specs = feature_specs
        self.encoder = encoder
        self.heads = self.build_heads(dtype)

    def build_heads(self, dtype) -> dict:
        """Builds the task's heads; returns them by checkpoint name (order is kept)."""
        return {}

    @property
    def enabled(self) -> bool:
        """Whether the run makes this task's inputs (it trains at steps of weight > 0)."""
        return True

    def weight_at(self, step: int) -> float:
        """The task's loss weight at a step (0: no loss and no encoder pass for it)."""
        raise NotImplementedError

    def make_inputs(self, ids: dict, seed: tf.Tensor) -> dict:
        """The task's entries of one global batch's example.

        Args:
            ids: dict. The batch's model inputs (ids, values, `padding_mask`).
            seed: int64 tensor [2]. This batch's seed plus `seed_offset`.

        Returns:
            dict of tensors whose first dimension is the batch's rows (replicas take
            their rows of each), named so that no other task's entries clash.
        """
        raise NotImplementedError

    def loss_and_metrics(self, context: StepContext) -> tuple:
        """The task's loss on one replica's rows, and its metrics.

        Returns:
            `(loss, metrics)`: the loss (summed over this replica's rows, divided by the
            global count, so replicas add up to the global mean) and a dict of scalars
            that holds `<prefix>/loss`.
        """
        raise NotImplementedError

    def evaluation(self, example: dict) -> dict:
        """Additive sums of held-out metrics on one example (no dropout); {} for none."""
        return {}

    def summarise(self, sums: dict) -> dict:
        """Held-out metrics from the sums of `evaluation` over every batch."""
        return {}
