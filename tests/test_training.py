"""Pre-training end to end on seeded simulated data (small enough for CI)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from autorisk_tf.data.artifacts import Artifacts
from autorisk_tf.training import Pretrainer, load_config
from tests.conftest import SMALL, free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--set", "model.width=16", "--set", "model.num_blocks=1", "--set", "model.ffn_dim=16",
        "--set", "model.block_size=8", "--set", "model.text_dim=8", "--set", "model.dropout=0.0",
        "--set", "input.bucket_boundaries=[64,256]", "--set", "training.warmup_steps=2",
        "--set", "quick_thought.projection_dim=8", "--set", "curriculum.quick_thought_start=3",
        "--set", "curriculum.quick_thought_ramp=2", "--verbose", "0", "--eval_batches", "0"]


def test_masked_event_accuracy_beats_the_majority_class(pretrained, pretraining_data):
    trainer, _ = pretrained
    metrics = trainer.evaluate(f"{pretraining_data}/valid/*.tfrecord")
    assert metrics["events_masked"] > 1000
    for field, margin in (("event_type", 0.15), ("channel", 0.2), ("amount", 0.02),
                          ("device", 0.01)):
        assert metrics[f"mlm/{field}/accuracy"] > metrics[f"mlm/{field}/majority"] + margin
    # pay_method is empty unless the hidden event is a payment; by the simulator's own
    # probabilities the best guess beats the majority class by only 0.01-0.02 (docs/results.md);
    # the seeded 300-step run gets 0.534 against 0.517, so at least the majority holds.
    assert metrics["mlm/pay_method/accuracy"] >= metrics["mlm/pay_method/majority"]


def test_quick_thought_finds_partners_far_above_chance(pretraining_data, tmp_path):
    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    config = load_config(SMALL, {"training.steps": 100, "model.num_blocks": 1,
                                 "curriculum.masked_event_weight": 0.0,
                                 "curriculum.quick_thought_start": 0,
                                 "curriculum.quick_thought_weight": 1.0,
                                 "curriculum.quick_thought_ramp": 1})
    trainer = Pretrainer(artifacts, config, str(tmp_path))
    trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
    metrics = trainer.evaluate(f"{pretraining_data}/valid/*.tfrecord")
    # 100 steps of one block reach 0.346 against a chance of 0.112 (3.1x) on this seeded data.
    assert metrics["qt/accuracy"] > 2.5 * metrics["qt/chance"], metrics


def test_slice_contrastive_alone_learns_to_pair_slices(pretraining_data, tmp_path):
    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    config = load_config(SMALL, {"training.steps": 40, "curriculum.masked_event_weight": 0.0,
                                 "curriculum.quick_thought_start": None,
                                 "curriculum.slice_contrastive_start": 0,
                                 "slice_contrastive.num_slices": 3,
                                 "slice_contrastive.min_fraction": 0.2,
                                 "slice_contrastive.max_fraction": 0.5})
    trainer = Pretrainer(artifacts, config, str(tmp_path))
    final = trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
    assert "mlm/loss" not in final  # a task with weight 0 costs no encoder pass
    losses = [h["slice/loss"] for h in trainer.history]
    assert np.mean(losses[-10:]) < losses[0] - 0.5, losses
    # 32 users x 3 slices: chance that the nearest other slice is the user's own is 2/95
    assert final["slice/accuracy"] > 10 * 2 / 95, final


def _bag_task(trainer):
    (task,) = [task for task in trainer.tasks if task.name == "bag_of_ids"]
    return task


def _cv_auc(x, y):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    return cross_val_score(model, x, y, cv=5, scoring="roc_auc").mean()


def test_lr_on_pretrained_embeddings_beats_random_weights(pretrained, pretraining_data):
    from autorisk_tf.embed import embed

    trainer, untrained = pretrained
    pattern = f"{pretraining_data}/*/*.tfrecord"
    schema = trainer.artifacts.schema
    keys, trained_x, labels = embed(trainer.embedder(), pattern, schema)
    keys_r, random_x, _ = embed(untrained, pattern, schema)
    assert len(keys) == 1500 and list(keys) == list(keys_r)
    # `takeover` is told by timing alone (its decoys hold the same events from a new device,
    # days apart), which a linear probe on pooled embeddings reads less well: 0.84 here.
    for label, floor in (("is_risk", 0.85), ("takeover", 0.8)):
        y = labels[label].astype(int)
        trained, random = _cv_auc(trained_x, y), _cv_auc(random_x, y)
        assert trained > random + 0.05, (label, trained, random)
        assert trained > floor, (label, trained)


def test_train_cli_writes_a_loadable_encoder_and_embed_cli(pretraining_data, tmp_path):
    model_dir = tmp_path / "model"
    _train(pretraining_data, model_dir, steps=6, extra=["--eval_batches", "2"])
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["valid/qt/chance"] > 0 and "valid/mlm/event_type/accuracy" in metrics
    assert np.isfinite(metrics["loss"]) and metrics["qt/loss"] > 0  # quick thought joined
    out = subprocess.run([sys.executable, "-m", "autorisk_tf.embed", "--model_dir",
                          str(model_dir), "--data", pretraining_data, "--split", "valid",
                          "--output", str(tmp_path / "emb" / "valid"), "--format", "csv"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    vectors = np.load(tmp_path / "emb" / "valid.npy")
    table = (tmp_path / "emb" / "valid.csv").read_text().splitlines()
    assert vectors.shape == (len(table) - 1, 32) and len(table) > 100
    assert table[0].startswith('"key","label_is_risk"')


def _train(data, model_dir, steps, extra=(), env=None, wait=True):
    command = [sys.executable, "-m", "autorisk_tf.train", "--data", data, "--model_dir",
               str(model_dir), "--steps", str(steps), "--batch_size", "8", *TINY, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def _final_weights(model_dir):
    import keras

    import autorisk_tf.layers  # noqa: F401

    model = keras.models.load_model(os.path.join(model_dir, "encoder.keras"))
    return [np.asarray(w) for w in model.weights]


def test_killed_run_resumes_from_its_last_checkpoint(pretraining_data, tmp_path):
    # Dropout on: the restored run must also draw the same dropout masks as the straight one.
    # Masked events only: one traced step per run (most of a 12-step run is tracing).
    extra = ["--checkpoint_every", "4", "--set", "model.dropout=0.2",
             "--set", "curriculum.quick_thought_start=null"]
    _train_in_process(pretraining_data, tmp_path / "straight", steps=12, extra=extra)
    process = _train(pretraining_data, tmp_path / "killed", steps=12, extra=extra, wait=False)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    # The manager's state file is written after the checkpoint's own files: once it exists,
    # a checkpoint is complete and named (killing between the two left nothing to resume).
    while not (checkpoints / "checkpoint").exists():
        assert process.poll() is None and time.time() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "encoder.keras").exists()  # it did not finish
    stdout = _train(pretraining_data, tmp_path / "killed", steps=12, extra=extra)
    resumed = int(stdout.split("resumed from step ")[1].split()[0])
    assert resumed in (4, 8)
    assert "step 12:" in stdout  # the step counter (optimizer iterations) went on to 12
    for a, b in zip(_final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed"),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_two_workers_match_a_single_worker(pretraining_data, tmp_path):
    """Same weights and optimizer state from 2 workers as from 1 on the same global batch.

    With plain SGD the update is the gradient times the learning rate, so a wrong all-reduce
    or a missing division by the replicas shows in the weights as a factor of 2 (Adam's
    update hardly changes when the gradient is scaled, so it would hide one; workers' Adam
    moments follow from the same all-reduced gradients).
    """
    extra = ["--set", "training.optimizer=sgd", "--set", "training.learning_rate=0.5"]
    _train_in_process(pretraining_data, tmp_path / "single", steps=5, extra=extra)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(_train(pretraining_data, tmp_path / "multi", steps=5, wait=False,
                                extra=extra, env={"TF_CONFIG": json.dumps(config)}))
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    single = _final_weights(tmp_path / "single")
    multi = _final_weights(tmp_path / "multi")
    chief = _checkpoint_values(tmp_path / "multi" / "checkpoints")
    other = _checkpoint_values(tmp_path / "multi" / "checkpoints_worker_1")
    assert chief.keys() == other.keys() and len(chief) > 20
    for name, value in chief.items():  # weights, optimizer moments and step counter
        np.testing.assert_array_equal(value, other[name], err_msg=name)
    for a, b in zip(single, multi, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    _train_in_process(pretraining_data, tmp_path / "zero", steps=0, extra=extra)
    initial = _final_weights(tmp_path / "zero")
    moved = max(np.abs(a - b).max() for a, b in zip(single, initial, strict=True))
    assert moved > 1e-3  # the steps moved the weights well past the tolerance above


def _checkpoint_values(directory):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(directory))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name}


def _train_in_process(data, model_dir, steps, extra=()):
    """What `_train(data, model_dir, steps, extra)` does, in this process (no TF start-up)."""
    import yaml

    sets = [*TINY, *extra]
    overrides = {key: yaml.safe_load(value) for key, value in (
        item.split("=", 1) for flag, item in zip(sets, sets[1:], strict=False)
        if flag == "--set")}
    if "--checkpoint_every" in sets:
        overrides["training.checkpoint_every"] = int(sets[sets.index("--checkpoint_every") + 1])
    config = load_config(None, {**overrides, "input.batch_size": 8, "training.steps": steps})
    Pretrainer(Artifacts.load(f"{data}/artifacts"), config, str(model_dir)).fit(
        f"{data}/train/*.tfrecord", verbose=0)


# mixed_float16 trains in test_loss_scaling_halves_the_scale_and_skips_an_overflowing_step.
@pytest.mark.parametrize("overrides", [{"training.precision": "mixed_bfloat16"},
                                       {"training.jit_compile": True}])
def test_precision_and_xla_options_train(pretraining_data, tmp_path, overrides):
    import keras

    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    # one step with both tasks: one traced (or XLA-compiled) training step
    config = load_config(SMALL, {"training.steps": 1, "model.width": 16, "model.num_blocks": 1,
                                 "model.ffn_dim": 16, "model.text_dim": 8,
                                 "curriculum.quick_thought_start": 0, **overrides})
    policy = keras.config.dtype_policy().name
    trainer = Pretrainer(artifacts, config, str(tmp_path))
    metrics = trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
    assert keras.config.dtype_policy().name == policy  # the global policy is untouched
    assert np.isfinite(metrics["loss"]) and metrics["qt/loss"] > 0
    precision = config.training.precision
    assert trainer.encoder.compute_dtype == (
        "float32" if precision == "float32" else precision.split("_")[1])
    assert all(w.dtype == "float32" for w in trainer.encoder.weights)


def _tiny_trainer(pretraining_data, tmp_path, **overrides):
    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    config = load_config(SMALL, {"model.width": 16, "model.num_blocks": 1,
                                 "model.ffn_dim": 16, "model.text_dim": 8, **overrides})
    return Pretrainer(artifacts, config, str(tmp_path))


def test_jit_compile_really_compiles_the_encoder(pretraining_data, tmp_path):
    from autorisk_tf.data import reader

    batch = next(iter(reader.make_dataset(f"{pretraining_data}/valid/*.tfrecord",
                                          Artifacts.load(f"{pretraining_data}/artifacts").schema,
                                          batch_size=4)))
    jit = _tiny_trainer(pretraining_data, tmp_path / "jit", **{"training.jit_compile": True})
    ids = jit.preprocessor(batch)
    hlo = jit._encode.experimental_get_compiler_ir(ids, True)(stage="hlo")
    assert hlo.startswith("HloModule") and "dot(" in hlo  # XLA lowered the encoder's matmuls
    plain = _tiny_trainer(pretraining_data, tmp_path / "plain")
    with pytest.raises(ValueError, match="jit_compile"):
        plain._encode.experimental_get_compiler_ir(ids, True)(stage="hlo")


def test_loss_scaling_halves_the_scale_and_skips_an_overflowing_step(pretraining_data,
                                                                     tmp_path):
    from keras import ops

    trainer = _tiny_trainer(pretraining_data, tmp_path, **{
        "training.precision": "mixed_float16", "training.steps": 1,
        "curriculum.quick_thought_start": None})
    assert trainer.encoder.compute_dtype == "float16"
    assert all(w.dtype == "float32" for w in trainer.encoder.weights)
    before = [ops.convert_to_numpy(v) for v in trainer.encoder.trainable_variables]
    trainer.optimizer.dynamic_scale.assign(2.0**40)  # float16 gradients overflow at this scale
    metrics = trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
    assert np.isfinite(metrics["loss"])
    assert float(trainer.optimizer.dynamic_scale) == 2.0**39  # halved after the overflow
    after = [ops.convert_to_numpy(v) for v in trainer.encoder.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # skipped


def test_separate_ids_gives_the_ids_part_its_own_bag_decoder(pretraining_data, tmp_path):
    from autorisk_tf.data import reader
    from autorisk_tf.tasks.bag_of_ids import bag_targets

    trainer = _tiny_trainer(pretraining_data, tmp_path, **{
        "model.pooling": ["mean", "ids"], "model.ids_dim": 8, "bag_of_ids.loss": "squared",
        "bag_of_ids.separate_ids": True, "curriculum.bag_of_ids_weight": 1.0,
        "curriculum.quick_thought_start": None, "training.steps": 3})
    widths = trainer.encoder.pooling_dims
    assert widths["mean"] == 16 and widths["ids"] > 8  # several categorical fields
    kernel = next(iter(trainer.heads["ids_bag_head"].classifiers.values())).kernel
    assert kernel.shape[0] == widths["ids"]
    assert next(iter(trainer.heads["bag_head"].classifiers.values())).kernel.shape[0] == 16
    metrics = trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
    assert np.abs(np.asarray(kernel)).max() > 0  # trained away from its zero start
    assert any(key.startswith("bag_ids/") for key in metrics)
    batch = next(iter(reader.make_dataset(f"{pretraining_data}/valid/*.tfrecord",
                                          trainer.artifacts.schema, batch_size=4)))
    ids = trainer.preprocessor(batch)
    embedding = trainer.encoder(ids)["embedding"]
    targets = bag_targets(ids, trainer.feature_specs)
    loss, _ = _bag_task(trainer).bag_loss(embedding, targets)
    shared, _ = trainer.heads["bag_head"].loss_and_metrics(embedding[:, :16], targets, 32)
    own, _ = trainer.heads["ids_bag_head"].loss_and_metrics(embedding[:, 16:], targets, 32)
    np.testing.assert_allclose(float(loss), float(shared + own), rtol=1e-5)
    with pytest.raises(ValueError, match="separate_ids needs `ids` in model.pooling"):
        load_config(SMALL, {"bag_of_ids.separate_ids": True,
                            "model.pooling": ["mean", "attention"]})


def test_idf_weighting_counts_document_frequencies_and_weighs_the_ids_target(
        pretraining_data, tmp_path):
    from autorisk_tf.data import reader
    from autorisk_tf.tasks.bag_of_ids import bag_targets

    trainer = _tiny_trainer(pretraining_data, tmp_path, **{
        "model.pooling": ["mean", "ids"], "model.ids_dim": 8,
        "model.ids_weighting": "idf", "bag_of_ids.loss": "squared",
        "bag_of_ids.separate_ids": True, "curriculum.bag_of_ids_weight": 1.0,
        "curriculum.quick_thought_start": None, "training.steps": 1})
    pattern = f"{pretraining_data}/train/*.tfrecord"
    trainer.fit(pattern, verbose=0)
    sequences = list(reader.read_sequences(pattern, trainer.artifacts.schema))
    vocabulary = [value for value, _ in trainer.artifacts.vocabularies["channel"]]
    holding = sum("h5" in ex["event/channel"] for ex in sequences)
    assert 0 < holding < len(sequences)
    idf = np.asarray(trainer.encoder.id_bag.id_weights()["channel"])
    h5 = vocabulary.index("h5") + 4  # NUM_RESERVED_IDS
    np.testing.assert_allclose(idf[h5], np.log((1 + len(sequences)) / (1 + holding)) + 1,
                               rtol=1e-6)
    batch = next(iter(reader.make_dataset(f"{pretraining_data}/valid/*.tfrecord",
                                          trainer.artifacts.schema, batch_size=4)))
    ids = trainer.preprocessor(batch)
    embedding = trainer.encoder(ids)["embedding"]
    targets = bag_targets(ids, trainer.feature_specs)
    weights = trainer.encoder.id_bag.id_weights()
    rng = np.random.default_rng(0)
    ids_head = trainer.heads["ids_bag_head"]
    for classifier in ids_head.classifiers.values():  # away from its zero start
        classifier.kernel.assign(rng.normal(size=classifier.kernel.shape).astype("float32"))
    loss, _ = _bag_task(trainer).bag_loss(embedding, targets)
    own, _ = ids_head.loss_and_metrics(embedding[:, 16:], targets, 32, weights)
    plain, _ = ids_head.loss_and_metrics(embedding[:, 16:], targets, 32)
    shared, _ = trainer.heads["bag_head"].loss_and_metrics(embedding[:, :16], targets, 32)
    np.testing.assert_allclose(float(loss), float(shared + own), rtol=1e-5)
    assert abs(float(own) - float(plain)) > 1e-4  # the weights change the ids target


def test_a_resumed_run_keeps_the_idf_weights_it_trained_with(pretraining_data, tmp_path):
    """The `ids` pooling's idf weights (not trained) come back from the checkpoint.

    They were once missing from it: a finished run restored in a new process embedded with
    every weight 1 (binary), not the idf its tables were trained with.
    """
    overrides = {"model.pooling": ["mean", "ids"], "model.ids_dim": 8,
                 "model.ids_weighting": "idf", "bag_of_ids.loss": "squared",
                 "curriculum.bag_of_ids_weight": 1.0, "curriculum.quick_thought_start": None,
                 "training.steps": 2, "training.checkpoint_every": 1}
    pattern = f"{pretraining_data}/train/*.tfrecord"
    trained = _tiny_trainer(pretraining_data, tmp_path, **overrides)
    trained.fit(pattern, verbose=0)
    restored = _tiny_trainer(pretraining_data, tmp_path, **overrides)
    assert restored.restore() == 2
    idf = np.asarray(trained.encoder.id_bag.id_weights()["channel"])
    assert idf.max() > 1.5  # set from the data, not the initial ones
    np.testing.assert_array_equal(
        np.asarray(restored.encoder.id_bag.id_weights()["channel"]), idf)
    for a, b in zip(trained.encoder.weights, restored.encoder.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_checkpoint_lacking_some_of_the_models_variables_is_a_clear_error(
        pretraining_data, tmp_path):
    # Binary then idf weighting: the same trainable variables, and idf weights that the
    # first run's checkpoint does not hold (as checkpoints written before they were kept).
    overrides = {"model.pooling": ["mean", "ids"], "model.ids_dim": 8,
                 "curriculum.quick_thought_start": None, "training.steps": 1}
    _tiny_trainer(pretraining_data, tmp_path, **overrides,
                  **{"model.ids_weighting": "binary"}).fit(
        f"{pretraining_data}/train/*.tfrecord", verbose=0)
    idf = _tiny_trainer(pretraining_data, tmp_path, **overrides,
                        **{"model.ids_weighting": "idf"})
    with pytest.raises(ValueError, match=r"ckpt-1 does not hold every variable(.|\n)*"
                                         r"idf_channel"):
        idf.restore()


def test_train_cli_stops_with_one_line_on_a_checkpoint_lacking_variables(pretraining_data,
                                                                         tmp_path):
    ids = ["--set", "model.pooling=[mean,ids]", "--set", "model.ids_dim=8",
           "--set", "curriculum.quick_thought_start=null"]
    _train(pretraining_data, tmp_path, steps=1,
           extra=[*ids, "--set", "model.ids_weighting=binary"])
    process = _train(pretraining_data, tmp_path, steps=1, wait=False,
                     extra=[*ids, "--set", "model.ids_weighting=idf"])
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: the checkpoint ") and "idf_channel" in last, last


def test_a_seeded_run_on_the_same_files_repeats_exactly(pretraining_data, tmp_path):
    """What `beam.preprocess --sorted_shards` relies on: same files + seed = same weights."""
    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    config = load_config(SMALL, {"training.steps": 12, "model.num_blocks": 1,
                                 "model.width": 16, "model.ffn_dim": 16,
                                 "curriculum.quick_thought_start": 4,
                                 "curriculum.quick_thought_ramp": 2, "input.seed": 3})
    weights = []
    for name in ("a", "b"):
        trainer = Pretrainer(artifacts, config, str(tmp_path / name))
        trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
        weights.append([v.numpy() for v in trainer.embedder().encoder.weights])
    assert len(weights[0]) > 10
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)
    # And the weights moved: the comparison is not of two untouched initialisations.
    fresh = Pretrainer(artifacts, config, str(tmp_path / "fresh")).embedder().encoder.weights
    assert any(not np.array_equal(w, f.numpy()) for w, f in zip(weights[0], fresh, strict=True))
