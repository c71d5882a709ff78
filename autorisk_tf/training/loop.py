"""The pre-training loop: a custom `strategy.run` loop that works on one CPU, GPUs and workers.

Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585), so the
loop is our own, for every strategy alike:

- the loop knows no task by name: it builds every task of `autorisk_tf.tasks.TASKS`,
  merges the enabled tasks' inputs into one example per global batch and adds up the
  weighted losses of the tasks whose weight is above 0 at a step (one traced step per set);
- every worker builds the same global batches from the same seed and each replica keeps its
  rows (`pipeline.slice_rows`), so N workers train on exactly what one device would;
- losses are sums over the global batch divided by global counts (quick thought gathers the
  embeddings of all replicas, so its negatives are the whole global batch); gradients are
  all-reduced here, clipped by their global norm, then applied (clipping sees the global
  gradient);
- `tf.train.CheckpointManager` saves the encoder, heads and optimizer (its step counter
  included) every `checkpoint_every` steps; a restarted run restores the latest checkpoint
  and skips the batches already trained on, so it continues exactly where it stopped
  (the dropout streams' seed states are checkpointed too).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from autorisk_tf.contract import CONFIG_FILE, ENCODER_FILE, SCHEMA_FILE
from autorisk_tf.data import fileio, pipeline
from autorisk_tf.data.artifacts import Artifacts
from autorisk_tf.layers.event_preprocessor import (
    PADDING_MASK,
    EventPreprocessor,
    feature_specs_from_artifacts,
    model_input_names,
)
from autorisk_tf.layers.id_bag import bag_fields, bag_targets
from autorisk_tf.layers.sequence_embedder import SequenceEmbedder
from autorisk_tf.layers.sequence_encoder import SequenceEncoder
from autorisk_tf.tasks import TASKS, StepContext
from autorisk_tf.training.config import TrainConfig
from autorisk_tf.training.optimizers import summed_gradients_optimizer, summed_rows

# TensorBoard's scalar plugin metadata, so logs need no `tensorboard` package to write.
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()


class ProgressReport:
    """Training progress: Keras' bar on a terminal, a plain line every 5% of steps otherwise.

    A bar redrawn with carriage returns fills a log file with thousands of updates when
    stdout is a file or a pipe; there the report prints one line per 5% of the steps (and
    the last step) instead.

    Args:
        steps: int. The step count of the run.
        stream: file or None. Where plain lines go. Defaults to `sys.stdout`.
    """

    def __init__(self, steps: int, stream=None):
        self.steps = steps
        self.stream = stream or sys.stdout
        self.every = max(1, steps // 20)
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.bar = keras.utils.Progbar(steps, stateful_metrics=None) if isatty() else None

    def update(self, step: int, metrics: dict) -> None:
        """Reports that `step` steps are done, with their latest metrics."""
        if self.bar is not None:
            self.bar.update(step, list(metrics.items()))
        elif step % self.every == 0 or step == self.steps:
            values = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"step {step}/{self.steps} {values}", file=self.stream, flush=True)


def _write_scalars(writer, step: int, scalars: dict) -> None:
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.write(name, tf.constant(value, tf.float32), metadata=_SCALAR)


def default_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy under TF_CONFIG, MirroredStrategy on GPUs, else default."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class CheckpointMismatchError(ValueError):
    """A checkpoint that lacks some of the model's variables (another config or version)."""


def _random_states(layers) -> list:
    """The dropout streams' seed states (`keras.random.SeedGenerator`s) of some layers.

    They are not weights, so checkpoints would miss them: a resumed run would then draw
    other dropout masks than an uninterrupted one.
    """
    states = []
    for layer in layers:
        weights = {id(w) for w in layer.weights}
        states.extend(v.value for v in layer.variables if id(v) not in weights)
    return states


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


class Pretrainer:
    """Builds the encoder and task heads under a strategy and trains them.

    Args:
        artifacts: Artifacts. Schema, vocabularies and boundaries of the data.
        config: TrainConfig. Model, input, task, curriculum and optimisation settings.
        model_dir: str. Checkpoints, TensorBoard logs, `encoder.keras` and `config.json`.
        strategy: tf.distribute.Strategy or None. Defaults to `default_strategy()`.

    Example:
    ```python
    trainer = Pretrainer(Artifacts.load("out/artifacts"), TrainConfig(), "runs/x")
    metrics = trainer.fit("out/train/*.tfrecord")
    ```
    """

    def __init__(self, artifacts: Artifacts, config: TrainConfig, model_dir: str,
                 strategy: tf.distribute.Strategy | None = None):
        self.artifacts = artifacts
        self.config = config
        self.model_dir = model_dir
        self.strategy = strategy or default_strategy()
        self.is_chief = _is_chief(self.strategy)
        self.feature_specs = feature_specs_from_artifacts(artifacts)
        self.history: list[dict] = []
        self.preprocessor = EventPreprocessor(self.feature_specs, name="event_preprocessor")
        train = config.training
        dtype = None if train.precision == "float32" else train.precision
        keras.utils.set_random_seed(config.input.seed)  # same initial weights on every worker
        with self.strategy.scope():
            self.encoder = SequenceEncoder(self.feature_specs, config.model, name="encoder",
                                           dtype=dtype)
            self.encoder.build(None)
            self.tasks = [task(config, self.feature_specs, self.encoder, dtype)
                          for task in TASKS]
            schedule = keras.optimizers.schedules.CosineDecay(
                0.0, max(train.steps - train.warmup_steps, 1), warmup_target=train.learning_rate,
                warmup_steps=train.warmup_steps)
            if train.optimizer == "sgd":
                optimizer = summed_gradients_optimizer(keras.optimizers.SGD)(schedule)
            else:
                optimizer = summed_gradients_optimizer(keras.optimizers.AdamW)(
                    schedule, weight_decay=train.weight_decay)
            if train.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.trainable_variables)
        modules = (self.encoder, *self.heads.values())
        # The modules' trainable variables are restored through the optimizer's list of
        # them; state that no gradient updates (the `ids` pooling's idf weights, set from
        # the training data before step 1) needs its own entry.
        state = [v for module in modules for v in module.non_trainable_weights]
        extra = {"non_trainable_state": state} if state else {}
        self.checkpoint = tf.train.Checkpoint(encoder=self.encoder, **self.heads, **extra,
                                              optimizer=self.optimizer,
                                              random_states=_random_states(modules))
        self._encode = tf.function(self._encode_fn, jit_compile=train.jit_compile,
                                   reduce_retracing=True)

    @property
    def heads(self) -> dict:
        """Every task's heads by checkpoint name (`mlm_head`, `qt_head`, ...), in task order."""
        return {name: head for task in self.tasks for name, head in task.heads.items()}

    @property
    def enabled_tasks(self) -> list:
        """The tasks whose inputs this run makes (each trains at steps of weight > 0)."""
        return [task for task in self.tasks if task.enabled]

    @property
    def _idf_weighted(self) -> bool:
        """Whether the encoder's `ids` pooling weighs ids by inverse document frequency."""
        return self.encoder.id_bag is not None and self.encoder.id_bag.weighting == "idf"

    @property
    def trainable_variables(self) -> list:
        """Every trained variable: the encoder's, then each task head's."""
        return self.encoder.trainable_variables + [
            v for head in self.heads.values() for v in head.trainable_variables]

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (restored with the checkpoint)."""
        return int(self.optimizer.iterations.numpy())

    def _encode_fn(self, inputs, training):
        return self.encoder(inputs, training=training)

    def _examples(self, batch, seed):
        """One global batch to every enabled task's inputs (before replicas take rows)."""
        inputs = model_input_names(self.feature_specs)
        ids = {name: value for name, value in batch.items() if name in inputs}
        example = {}
        for task in self.enabled_tasks:
            offset = tf.constant([task.seed_offset] * 2, tf.int64)
            example.update(task.make_inputs(ids, seed + offset))
        return example

    def dataset(self, file_pattern: str, skip_batches: int = 0) -> tf.distribute.DistributedDataset:
        """The distributed training input: each replica gets its rows of every global batch."""
        config = self.config.input
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"input.batch_size {config.batch_size} must be a multiple of the "
                             f"{replicas} replicas")

        def dataset_fn(context: tf.distribute.InputContext):
            local = replicas // context.num_input_pipelines
            first_slice = context.input_pipeline_id * local
            batches = pipeline.id_batches(file_pattern, self.artifacts.schema,
                                          self.preprocessor, config, training=True)
            examples = (pipeline.with_seeds(batches, config.seed)
                        .map(self._examples, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)
                        .skip(skip_batches))
            sliced = examples.flat_map(lambda ex: tf.data.Dataset.range(local).map(
                lambda r: pipeline.slice_rows(ex, first_slice + tf.cast(r, tf.int32),
                                              replicas)))
            return sliced.prefetch(tf.data.AUTOTUNE)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _replica_step(self, example, weights, active):
        """Forward, backward and update on one replica's rows of the global batch.

        Args:
            example: dict. This replica's rows of every enabled task's inputs.
            weights: dict. Task name -> float32 scalar, the loss weight at this step.
            active: tuple of str. The tasks with a weight above 0 at this step (no encoder
                pass for the others).
        """
        replicas = self.strategy.num_replicas_in_sync
        train = self.config.training
        variables = self.trainable_variables
        context = StepContext(example, self._encode, replicas, self.config.input.batch_size)
        with tf.GradientTape() as tape:
            loss, metrics = tf.constant(0.0), {}
            for task in self.tasks:
                if task.name in active:
                    task_loss, task_metrics = task.loss_and_metrics(context)
                    loss += weights[task.name] * task_loss
                    metrics.update(task_metrics)
            scaled = loss
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        # A gathered table's gradient stays `IndexedSlices` (the rows the batch used) through
        # the all-reduce, the clip and the optimizer: dense, a table of a million hashed ids
        # would cost a pass over every row each step.
        grads = [tf.zeros_like(v) if g is None else summed_rows(g)
                 for g, v in zip(grads, variables, strict=True)]
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        # A sparse all-reduce gathers the replicas' rows: summed again, the global norm
        # below is the norm of the summed gradient.
        grads = [summed_rows(g) for g in grads]
        clip = train.clip_norm
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            clip = clip * tf.cast(self.optimizer.dynamic_scale, tf.float32)
        grads, norm = tf.clip_by_global_norm(grads, clip)
        # Losses are divided by the global batch, so the sum over replicas is the gradient of
        # the global mean; the optimizer takes it as it is (no second all-reduce).
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        metrics["loss"] = loss
        metrics["grad_norm"] = norm / replicas
        return metrics

    def _make_step(self, active: tuple):
        """A traced training step for one set of active tasks (names with weight > 0)."""
        @tf.function
        def step(iterator, weights):
            per_replica = self.strategy.run(self._replica_step,
                                            args=(next(iterator), weights, active))
            return {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                    for name, value in per_replica.items()}
        return step

    def _learning_rate(self) -> float:
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return float(optimizer.learning_rate)

    def restore(self) -> int:
        """Restores the latest checkpoint of `model_dir`, if any; returns the step.

        Raises:
            CheckpointMismatchError: the checkpoint lacks some of the model's variables.
        """
        manager = self._manager()
        if manager.latest_checkpoint:
            status = self.checkpoint.restore(manager.latest_checkpoint)
            try:
                status.assert_existing_objects_matched()
            except AssertionError as error:
                raise CheckpointMismatchError(
                    f"the checkpoint {manager.latest_checkpoint} does not hold every variable "
                    f"of this config's model (written by another config or version?): "
                    f"train into a new model_dir. {error}") from error
        return self.step

    def _checkpoint_dir(self) -> str:
        if self.is_chief:
            return fileio.join(self.model_dir, "checkpoints")
        # Every worker must save (collectives); only the chief's copy is kept.
        task = self.strategy.cluster_resolver.task_id
        return fileio.join(self.model_dir, f"checkpoints_worker_{task}")

    def _manager(self) -> tf.train.CheckpointManager:
        if not hasattr(self, "_checkpoint_manager"):
            self._checkpoint_manager = tf.train.CheckpointManager(
                self.checkpoint, self._checkpoint_dir(), max_to_keep=3)
        return self._checkpoint_manager

    def document_frequencies(self, file_pattern: str) -> tuple[dict, int]:
        """How many sequences hold each id of each categorical field (for `ids_weighting`).

        Args:
            file_pattern: str. Glob of the training shards.

        Returns:
            `({field: int64 [vocab size]}, number of sequences)`; reserved ids count 0.
        """
        import numpy as np

        counts = {s["name"]: np.zeros(s["vocab_size"], np.int64)
                  for s in bag_fields(self.feature_specs)}
        sequences = 0
        for batch in pipeline.id_batches(file_pattern, self.artifacts.schema,
                                         self.preprocessor, self.config.input, training=False):
            sequences += int(tf.shape(batch[PADDING_MASK])[0])
            for name, shares in bag_targets(batch, self.feature_specs).items():
                counts[name] += np.count_nonzero(shares.numpy() > 0, axis=0)
        return counts, sequences

    def fit(self, file_pattern: str, verbose: int = 1) -> dict:
        """Trains to `training.steps`, resuming from the latest checkpoint if there is one.

        Args:
            file_pattern: str. Glob of the training shards.
            verbose: int. 1 for a Keras progress bar on the chief, 0 for none.

        Returns:
            The metrics of the last step (floats). `self.history` then holds the step,
            seconds since the start and losses of every step of this call.
        """
        train = self.config.training
        start = self.restore()
        if start:
            print(f"resumed from step {start} ({self._manager().latest_checkpoint})")
        elif self._idf_weighted:
            self.encoder.id_bag.set_document_frequencies(*self.document_frequencies(
                file_pattern))
        if start >= train.steps:
            if self.is_chief:
                self.save_encoder()
            return {}
        iterator = iter(self.dataset(file_pattern, skip_batches=start))
        steps = {}
        manager = self._manager()
        writer = tf.summary.create_file_writer(
            fileio.join(self.model_dir, "logs" if self.is_chief else "logs_worker"))
        progress = ProgressReport(train.steps) if verbose and self.is_chief else None
        metrics, started, self.history = {}, time.time(), []
        shown = ("loss", *(name for task in self.enabled_tasks
                           for name in task.progress_metrics))
        for step in range(start, train.steps):
            weights = {task.name: task.weight_at(step) for task in self.enabled_tasks}
            active = tuple(name for name, weight in weights.items() if weight > 0)
            if active not in steps:  # one traced step per set of active tasks
                steps[active] = self._make_step(active)
            out = steps[active](iterator, {name: tf.constant(weights[name], tf.float32)
                                           for name in active})
            metrics = {name: float(value) for name, value in out.items()}
            self.history.append({"step": step + 1, "seconds": time.time() - started,
                                 **{k: v for k, v in metrics.items() if k.endswith("loss")}})
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"loss is {metrics['loss']} at step {step + 1}")
            done = step + 1
            if done % train.log_every == 0 or done == train.steps:
                _write_scalars(writer, done, {
                    **metrics, **{f"{name}_weight": weight for name, weight in weights.items()},
                    "learning_rate": self._learning_rate()})
            if done % train.checkpoint_every == 0 or done == train.steps:
                manager.save(checkpoint_number=done)
            if progress is not None:
                progress.update(done, {k: v for k, v in metrics.items() if k in shown})
        metrics["seconds"] = time.time() - started
        if self.is_chief:
            self.save_encoder()
        return metrics

    def evaluate(self, file_pattern: str, max_batches: int | None = None) -> dict:
        """Each enabled task's held-out metrics on some shards (one pass, no dropout).

        Args:
            file_pattern: str. Glob of evaluation shards (such as the valid split).
            max_batches: int or None. Stop after this many batches.

        Returns:
            The union of the tasks' `summarise` outputs: for masked events,
            `mlm/<field>/accuracy` and `mlm/<field>/majority` (the share of the most
            frequent target at the same masked events: the majority-class baseline) for
            every categorical and numeric field, `mlm/<field>/recall@5` and
            `mlm/<field>/recall@5_frequency` (the most frequent values guessed) for
            multi-valued fields and `events_masked`; for quick thought, `qt/accuracy` and
            `qt/chance` (1 / batch size, averaged over batches).
        """
        import numpy as np

        batches = pipeline.id_batches(file_pattern, self.artifacts.schema, self.preprocessor,
                                      self.config.input, training=False)
        examples = pipeline.with_seeds(batches, self.config.input.seed + 1).map(self._examples)
        if max_batches:
            examples = examples.take(max_batches)
        tasks = self.enabled_tasks

        @tf.function(reduce_retracing=True)
        @tf.autograph.experimental.do_not_convert  # Python loops over tasks and fields only
        def run(example):
            return {task.name: task.evaluation(example) for task in tasks}

        sums = {task.name: {} for task in tasks}
        for example in examples:
            for name, values in run(example).items():
                for key, value in values.items():
                    value = value.numpy()
                    if value.dtype.kind == "f":
                        value = value.astype(np.float64)
                    sums[name][key] = sums[name].get(key, 0) + value
        result = {}
        for task in tasks:
            result.update(task.summarise(sums[task.name]))
        return result

    def embedder(self) -> SequenceEmbedder:
        """The raw-events-to-embedding model (preprocessor + trained encoder)."""
        embedder = SequenceEmbedder(self.preprocessor, self.encoder, name="sequence_embedder")
        embedder.build()
        return embedder

    def save_encoder(self) -> str:
        """Writes `encoder.keras` (preprocessor + encoder) and `config.json` to model_dir.

        Also writes what export needs to take raw events without the `artifacts/` folder:
        `schema.yaml` and `preprocessing.json` (`PreprocessingOptions`: the `max_len` the
        data was cut to).
        """
        tf.io.gfile.makedirs(self.model_dir)
        path = fileio.join(self.model_dir, ENCODER_FILE)
        self.embedder().save(path)
        fileio.write_text(fileio.join(self.model_dir, CONFIG_FILE),
                          json.dumps(self.config.to_dict(), indent=1) + "\n")
        fileio.write_text(fileio.join(self.model_dir, SCHEMA_FILE),
                          self.artifacts.schema.source_text)
        self.artifacts.preprocessing.save(self.model_dir)
        return path
