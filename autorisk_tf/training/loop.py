"""The pre-training loop: a custom `strategy.run` loop that works on one CPU, GPUs and workers.

Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585), so the
loop is our own, for every strategy alike:

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
from autorisk_tf.layers.field_embedding import per_token
from autorisk_tf.layers.id_bag import bag_fields
from autorisk_tf.layers.sequence_embedder import SequenceEmbedder
from autorisk_tf.layers.sequence_encoder import SequenceEncoder
from autorisk_tf.tasks.bag_of_ids import BagOfIdsHead, bag_targets
from autorisk_tf.tasks.masked_event import MaskedEventHead, id_bag, mask_events, recall_at_k
from autorisk_tf.tasks.next_visit import NextVisitHead, cut_histories
from autorisk_tf.tasks.quick_thought import QuickThoughtHead, split_pairs
from autorisk_tf.tasks.slice_contrastive import SliceContrastiveHead, sample_slices
from autorisk_tf.training.config import TrainConfig

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


def _summed_gradients_optimizer(cls: type) -> type:
    """A Keras optimizer class that takes gradients already summed over the replicas.

    Keras 3.15's TensorFlow optimizers all-reduce the gradients they are given. The loop
    all-reduces them itself, to clip the global norm of the summed gradient (Keras clips per
    replica), so a second all-reduce would only cost another pass over the network. This
    overrides a private method of the pinned Keras; the two-worker SGD test fails if a
    Keras upgrade changes it (the update would then be off by the number of replicas).
    """
    class SummedGradients(cls):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return list(grads_and_vars)

    SummedGradients.__name__ = cls.__name__
    return SummedGradients


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
            width = config.model.width
            self.mlm_head = MaskedEventHead(
                self.feature_specs, config.masked_event.predict_text,
                predict_time=config.masked_event.mask_time_features,
                name="masked_event_head", dtype=dtype)
            self.mlm_head.build((None, width))
            pairs = config.quick_thought
            self.qt_head = QuickThoughtHead(pairs.projection_dim, pairs.temperature,
                                            pairs.learn_temperature, name="quick_thought_head",
                                            dtype=dtype)
            self.qt_head.build((None, self.encoder.embedding_dim))
            slices = config.slice_contrastive
            self.slice_head = SliceContrastiveHead(
                slices.projection_dim, slices.temperature, slices.learn_temperature,
                name="slice_contrastive_head", dtype=dtype)
            self.slice_head.build((None, self.encoder.embedding_dim))
            self.bag_head = BagOfIdsHead(self.feature_specs, config.bag_of_ids.loss,
                                         name="bag_of_ids_head", dtype=dtype)
            ids_width = self.encoder.pooling_dims.get("ids", 0)
            self.ids_bag_head = None
            if config.bag_of_ids.separate_ids and ids_width:
                self.ids_bag_head = BagOfIdsHead(self.feature_specs, config.bag_of_ids.loss,
                                                 name="ids_bag_head", dtype=dtype)
                self.ids_bag_head.build((None, ids_width))
            self.bag_head.build((None, self.encoder.embedding_dim
                                 - (ids_width if self.ids_bag_head is not None else 0)))
            self.next_head = None
            if config.curriculum.next_visit_weight > 0:
                self.next_head = NextVisitHead(self.feature_specs,
                                               config.next_visit.predict_text,
                                               name="next_visit_head", dtype=dtype)
                self.next_head.build((None, self.encoder.embedding_dim))
            schedule = keras.optimizers.schedules.CosineDecay(
                0.0, max(train.steps - train.warmup_steps, 1), warmup_target=train.learning_rate,
                warmup_steps=train.warmup_steps)
            if train.optimizer == "sgd":
                optimizer = _summed_gradients_optimizer(keras.optimizers.SGD)(schedule)
            else:
                optimizer = _summed_gradients_optimizer(keras.optimizers.AdamW)(
                    schedule, weight_decay=train.weight_decay)
            if train.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.trainable_variables)
        modules = (self.encoder, self.mlm_head, self.qt_head, self.slice_head, self.bag_head,
                   *self._optional_heads)
        extra = {name: head for name, head in (("ids_bag_head", self.ids_bag_head),
                                               ("next_head", self.next_head))
                 if head is not None}
        # The modules' trainable variables are restored through the optimizer's list of
        # them; state that no gradient updates (the `ids` pooling's idf weights, set from
        # the training data before step 1) needs its own entry.
        state = [v for module in modules for v in module.non_trainable_weights]
        if state:
            extra["non_trainable_state"] = state
        self.checkpoint = tf.train.Checkpoint(encoder=self.encoder, mlm_head=self.mlm_head,
                                              qt_head=self.qt_head,
                                              slice_head=self.slice_head,
                                              bag_head=self.bag_head,
                                              **extra,
                                              optimizer=self.optimizer,
                                              random_states=_random_states(modules))
        self._encode = tf.function(self._encode_fn, jit_compile=train.jit_compile,
                                   reduce_retracing=True)

    @property
    def _optional_heads(self) -> list:
        """The heads that only some configs build: the `ids` decoder, the next-visit head."""
        return [head for head in (self.ids_bag_head, self.next_head) if head is not None]

    @property
    def _idf_weighted(self) -> bool:
        """Whether the encoder's `ids` pooling weighs ids by inverse document frequency."""
        return self.encoder.id_bag is not None and self.encoder.id_bag.weighting == "idf"

    @property
    def trainable_variables(self) -> list:
        """Every trained variable: the encoder and every task head."""
        return (self.encoder.trainable_variables + self.mlm_head.trainable_variables
                + self.qt_head.trainable_variables + self.slice_head.trainable_variables
                + self.bag_head.trainable_variables
                + [v for head in self._optional_heads for v in head.trainable_variables])

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (restored with the checkpoint)."""
        return int(self.optimizer.iterations.numpy())

    def _encode_fn(self, inputs, training):
        return self.encoder(inputs, training=training)

    def _examples(self, batch, seed):
        """One global batch to the inputs of both tasks (before replicas take their rows)."""
        inputs = model_input_names(self.feature_specs)
        ids = {name: value for name, value in batch.items() if name in inputs}
        masked, targets = mask_events(ids, self.feature_specs, self.config.masked_event, seed)
        first, second = split_pairs(ids, self.config.quick_thought,
                                    seed + tf.constant([7, 7], tf.int64))
        count = tf.reduce_sum(targets["masked_weights"])
        example = {"masked": masked, "targets": targets, "first": first, "second": second,
                   "num_masked": tf.fill(tf.shape(targets["masked_weights"])[:1], count)}
        if self.config.curriculum.bag_of_ids_weight > 0:
            example["bag"] = bag_targets(ids, self.feature_specs)
        if self.next_head is not None:
            history, next_targets = cut_histories(ids, self.feature_specs,
                                                  self.config.next_visit,
                                                  seed + tf.constant([17, 17], tf.int64))
            rows = tf.reduce_sum(next_targets["masked_weights"])
            example.update({"history": history, "next_targets": next_targets,
                            "num_histories": tf.fill(
                                tf.shape(next_targets["masked_weights"])[:1], rows)})
        if self.config.curriculum.slice_contrastive_start is not None:
            example["slices"] = sample_slices(ids, self.config.slice_contrastive,
                                              seed + tf.constant([13, 13], tf.int64))
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

    def _bag_loss(self, embedding, targets):
        """The bag-of-ids loss and metrics: one decoder, or one more for the `ids` part.

        Args:
            embedding: float [b, E]. This replica's sequence embeddings (masked pass).
            targets: dict. `bag_targets` of the same rows.

        Returns:
            `(loss, metrics)`: with `separate_ids`, the sum of both decoders' losses, and
            the `ids` decoder's metrics under `bag_ids/`.
        """
        batch = self.config.input.batch_size
        # The decoder that reads the `ids` part reconstructs the bag weighted as it is (binary
        # weights are all ones: no weights to apply).
        weights = self.encoder.id_bag.id_weights() if self._idf_weighted else None
        if self.ids_bag_head is None:
            return self.bag_head.loss_and_metrics(embedding, targets, batch, weights)
        parts = self.encoder.split_embedding(embedding)
        ids_loss, ids_metrics = self.ids_bag_head.loss_and_metrics(parts.pop("ids"), targets,
                                                                   batch, weights)
        loss, metrics = self.bag_head.loss_and_metrics(
            tf.concat(list(parts.values()), axis=-1), targets, batch)
        metrics.update({key.replace("bag/", "bag_ids/"): value
                        for key, value in ids_metrics.items()})
        return loss + ids_loss, metrics

    def _replica_step(self, example, qt_weight, slice_weight, use_qt, use_slices):
        """Forward, backward and update on one replica's rows of the global batch."""
        replicas = self.strategy.num_replicas_in_sync
        weights = self.config.curriculum
        train = self.config.training
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss, metrics = tf.constant(0.0), {}
            # No encoder pass for tasks that are off.
            if weights.masked_event_weight > 0 or weights.bag_of_ids_weight > 0:
                out = self._encode(example["masked"], training=True)
            if weights.masked_event_weight > 0:
                mlm_loss, metrics = self.mlm_head.losses_and_metrics(
                    out["sequence"], example["targets"], example["num_masked"][0])
                loss = weights.masked_event_weight * mlm_loss
                metrics["mlm/loss"] = mlm_loss
            if weights.bag_of_ids_weight > 0:
                bag_loss, bag_metrics = self._bag_loss(out["embedding"], example["bag"])
                loss += weights.bag_of_ids_weight * bag_loss
                metrics.update(bag_metrics)
                metrics["bag/loss"] = bag_loss
            if self.next_head is not None:
                embedding = self._encode(example["history"], training=True)["embedding"]
                next_loss, next_metrics = self.next_head.next_loss_and_metrics(
                    embedding, example["next_targets"], example["num_histories"][0])
                loss += weights.next_visit_weight * next_loss
                metrics.update(next_metrics)
                metrics["next/loss"] = next_loss
            if use_qt:
                first = self._encode(example["first"], training=True)["embedding"]
                second = self._encode(example["second"], training=True)["embedding"]
                if replicas > 1:  # negatives from the whole global batch, as on one device
                    context = tf.distribute.get_replica_context()
                    first = context.all_gather(first, axis=0)
                    second = context.all_gather(second, axis=0)
                # Every replica computes the same global loss: 1/replicas each adds up to it.
                qt_loss, accuracy = self.qt_head.loss_and_accuracy(first, second)
                loss += qt_weight * qt_loss / replicas
                metrics["qt/loss"] = qt_loss / replicas
                metrics["qt/accuracy"] = accuracy / replicas
            if use_slices:
                k = self.config.slice_contrastive.num_slices
                views = self._encode(example["slices"], training=True)["embedding"]
                views = tf.reshape(views, [-1, k, tf.shape(views)[-1]])  # [b, K, E]
                if replicas > 1:
                    views = tf.distribute.get_replica_context().all_gather(views, axis=0)
                slice_loss, accuracy = self.slice_head.views_loss_and_accuracy(views)
                loss += slice_weight * slice_loss / replicas
                metrics["slice/loss"] = slice_loss / replicas
                metrics["slice/accuracy"] = accuracy / replicas
            scaled = loss
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                 for g, v in zip(grads, variables, strict=True)]
        context = tf.distribute.get_replica_context()
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
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

    def _make_step(self, use_qt: bool, use_slices: bool):
        @tf.function
        def step(iterator, qt_weight, slice_weight):
            per_replica = self.strategy.run(
                self._replica_step,
                args=(next(iterator), qt_weight, slice_weight, use_qt, use_slices))
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
        for step in range(start, train.steps):
            qt_weight = self.config.curriculum.quick_thought_weight_at(step)
            slice_weight = self.config.curriculum.slice_contrastive_weight_at(step)
            tasks = (qt_weight > 0, slice_weight > 0)
            if tasks not in steps:  # one traced step per set of active tasks
                steps[tasks] = self._make_step(*tasks)
            out = steps[tasks](iterator, tf.constant(qt_weight, tf.float32),
                               tf.constant(slice_weight, tf.float32))
            metrics = {name: float(value) for name, value in out.items()}
            self.history.append({"step": step + 1, "seconds": time.time() - started,
                                 **{k: v for k, v in metrics.items() if k.endswith("loss")}})
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"loss is {metrics['loss']} at step {step + 1}")
            done = step + 1
            if done % train.log_every == 0 or done == train.steps:
                _write_scalars(writer, done, {**metrics, "quick_thought_weight": qt_weight,
                                              "slice_contrastive_weight": slice_weight,
                                              "learning_rate": self._learning_rate()})
            if done % train.checkpoint_every == 0 or done == train.steps:
                manager.save(checkpoint_number=done)
            if progress is not None:
                progress.update(done, {k: v for k, v in metrics.items()
                                       if k in ("loss", "mlm/loss", "qt/accuracy",
                                                "slice/accuracy")})
        metrics["seconds"] = time.time() - started
        if self.is_chief:
            self.save_encoder()
        return metrics

    def evaluate(self, file_pattern: str, max_batches: int | None = None) -> dict:
        """Masked event and quick thought accuracy on held-out shards (one pass, no dropout).

        Args:
            file_pattern: str. Glob of evaluation shards (such as the valid split).
            max_batches: int or None. Stop after this many batches.

        Returns:
            `mlm/<field>/accuracy` and `mlm/<field>/majority` (the share of the most
            frequent target at the same masked events: the majority-class baseline) for
            every categorical and numeric field, `mlm/<field>/recall@5` and
            `mlm/<field>/recall@5_frequency` (the most frequent values guessed) for
            multi-valued fields, `qt/accuracy`, `qt/chance` (1 / batch size, averaged over
            batches) and `events_masked`.
        """
        import numpy as np

        batches = pipeline.id_batches(file_pattern, self.artifacts.schema, self.preprocessor,
                                      self.config.input, training=False)
        examples = pipeline.with_seeds(batches, self.config.input.seed + 1).map(self._examples)
        if max_batches:
            examples = examples.take(max_batches)
        fields = [s for s in self.mlm_head.targets if not per_token(s)]
        multi = [s for s in self.mlm_head.targets if s["kind"] == "categorical" and per_token(s)]
        sums = {}  # events masked, and recall@k numerators of multi-valued fields
        correct = dict.fromkeys((s["name"] for s in fields), 0)
        counts = {s["name"]: np.zeros(s["vocab_size"], np.int64) for s in fields}
        qt_hits, qt_chance, batches_seen = 0.0, 0.0, 0

        @tf.function(reduce_retracing=True)
        @tf.autograph.experimental.do_not_convert  # Python loops over fields only
        def run(example):
            out = self.encoder(example["masked"], training=False)
            selected = example["targets"]["masked_weights"] > 0
            hidden = tf.boolean_mask(out["sequence"], selected)
            predictions = {s["name"]: tf.argmax(self.mlm_head.classifiers[s["name"]](hidden),
                                                -1, output_type=tf.int32) for s in fields}
            targets = {s["name"]: tf.boolean_mask(example["targets"][s["name"]], selected)
                       for s in fields}
            recall = {"events": tf.reduce_sum(tf.cast(selected, tf.float32))}
            for s in multi:
                target = tf.boolean_mask(example["targets"][s["name"]], selected)
                scores = self.mlm_head.classifiers[s["name"]](hidden)
                for key, hits in recall_at_k(scores, id_bag(target, s["vocab_size"])).items():
                    recall[f"mlm/{s['name']}/{key}"] = tf.reduce_sum(hits)
            first = self.encoder(example["first"], training=False)["embedding"]
            second = self.encoder(example["second"], training=False)["embedding"]
            a, b = self.qt_head(first), self.qt_head(second)
            hits = tf.argmax(tf.matmul(a, b, transpose_b=True), 1, output_type=tf.int32)
            accuracy = tf.reduce_mean(tf.cast(hits == tf.range(tf.shape(a)[0]), tf.float32))
            return predictions, targets, recall, accuracy, tf.shape(a)[0]

        for example in examples:
            predictions, targets, recall, accuracy, size = run(example)
            for name, value in recall.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            for name in correct:
                target = targets[name].numpy()
                correct[name] += int((predictions[name].numpy() == target).sum())
                counts[name] += np.bincount(target, minlength=len(counts[name]))
            qt_hits += float(accuracy)
            qt_chance += 1.0 / int(size)
            batches_seen += 1
        total = max(int(sums.pop("events", 0)), 1)
        result = {"events_masked": total, "qt/accuracy": qt_hits / max(batches_seen, 1),
                  "qt/chance": qt_chance / max(batches_seen, 1)}
        result.update({name: hits / total for name, hits in sums.items()})
        for name in correct:
            result[f"mlm/{name}/accuracy"] = correct[name] / total
            result[f"mlm/{name}/majority"] = float(counts[name].max()) / total
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
