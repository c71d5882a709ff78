r"""Reason codes: which events made a classifier's score, by integrated gradients.

  python -m autorisk_tf.explain --model_dir runs/x_is_risk --data out/ --split test \
      --output expl/ [--top_k 5] [--steps 32] [--full]

For a fine-tuned classifier (`classifier.keras`, as `autorisk_tf.finetune` writes it), each
event of a user's sequence gets the share of the score it accounts for: integrated
gradients (Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017) on the
merged event vectors, the encoder's input after field embedding. The baseline is every event
replaced by the masked event of pre-training (its fields the mask id, its numbers 0, its
time kept), so an event's attribution is what it adds over "an event happened here". The
`ids` pooling reads which ids a user holds: along the path, each event's ids count as much
as the event is present (`IdBag`), so they are attributed to the events that hold them. The
`state` pooling, when configured, stays at the user's values (it has no per-event path).

Attributions add up to `score - baseline_score` (completeness); the gap left, relative to
`max(|score - baseline_score|, 0.01)`, is `completeness_error`. `explain` doubles the steps
of each user whose gap is above `tolerance` (up to `max_steps`). Within an event,
the attribution splits exactly over its fields (`field_attribution`): the merged vector is a
sum of one share per field (`FieldEmbedding.field_shares`) under both merges.

Writes `<output>/explanations.parquet`: one row per user with `key`, `score`,
`baseline_score`, `completeness_error`, `length`, and a list column `top_events` of the `top_k`
events with the largest attribution (`rank`, `index` in the time-sorted sequence,
`timestamp_ms`, the field values, `attribution` and each field's share); `--full` adds the
whole `attribution` vector per user.
"""

from __future__ import annotations

import json
import os
import sys
import weakref

import numpy as np
from absl import app, flags

from autorisk_tf.cli import require_flags
from autorisk_tf.data import fileio

FLAGS = flags.FLAGS
CLASSIFIER_FILE = "classifier.keras"
# Relative completeness gap `explain` accepts, and the denominator's floor (a score that
# barely moves from the baseline is held to an absolute gap of tolerance x this).
TOLERANCE = 0.01
MIN_DELTA = 0.01
MAX_STEPS = 4096


def integrated_gradients(classifier, parsed: dict, steps: int = 32, steps_per_pass: int = 8,
                         class_index=None, point: str = "midpoint") -> dict:
    """Attributes each user's score to the events of a parsed batch.

    The path from the baseline to the events is cut into `steps` equal parts and the
    gradient read at each part's midpoint; `steps_per_pass` of those points go through
    the encoder together, as one batch of `steps_per_pass * B` sequences.

    Args:
        classifier: SequenceClassifier. A fine-tuned classifier (dropout is off here).
        parsed: dict. A parsed batch (`reader.parse_batch`, `raw_batch.parse_raw_batch`).
        steps: int. Integration steps. Defaults to 32.
        steps_per_pass: int. Steps evaluated in one pass. Defaults to 8.
        class_index: int tensor [B] or None. For a categorical classifier, the class
            explained; None: the class it predicts. Ignored for a binary one.
        point: str. Where each step's gradient is read: `midpoint` (integrated gradients)
            or `end`; `gradient_x_input` reads it at the events themselves.

    Returns:
        Dict of tensors: `score` [B] (the probability explained), `baseline_score` [B],
        `attribution` [B, T] (0 at padding), `field_attribution` [B, T, F] (fields in
        `classifier.embedder.encoder.features` order), `completeness_error` [B],
        `class_index` int32 [B] (the class explained; 0 for a binary classifier) and
        `padding_mask` bool [B, T].
    """
    import tensorflow as tf

    from autorisk_tf.tasks.masked_event import hide_events

    encoder = classifier.embedder.encoder
    fields = encoder.embedding
    ids = classifier.embedder.preprocessor(parsed)
    mask = fields.compute_padding_mask(ids)
    real = tf.cast(mask, tf.float32)
    hidden = hide_events(ids, encoder.features, mask)
    events, baseline = fields(ids), fields(hidden)
    bag = [spec["name"] for spec in encoder.features
           if encoder.id_bag is not None and spec["name"] in encoder.id_bag.field_names]

    probabilities = _probabilities(classifier, encoder, events, ids, {})
    if classifier.classes is None:
        class_index = tf.zeros(tf.shape(real)[:1], tf.int32)
    elif class_index is None:
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    pick = lambda p, index: tf.gather(p, index, batch_dims=1)  # noqa: E731
    score = pick(probabilities, class_index)
    baseline_score = pick(_probabilities(classifier, encoder, baseline, ids,
                                         {f: tf.zeros_like(real) for f in bag}), class_index)

    delta = events - baseline
    steps_per_pass = min(steps_per_pass, steps) if isinstance(steps, int) else steps_per_pass
    steps = tf.convert_to_tensor(steps, tf.int32)
    tf.debugging.assert_equal(steps % steps_per_pass, 0,
                              message="steps must be a multiple of steps_per_pass")
    time_steps = tf.shape(real)[1]

    def one_pass(index, gradient, presence_gradient):
        alphas = (tf.cast(index * steps_per_pass + tf.range(steps_per_pass), tf.float32)
                  + (0.5 if point == "midpoint" else 1.0)) / tf.cast(steps, tf.float32)
        tiled = {k: tf.tile(v, [steps_per_pass] + [1] * (len(v.shape) - 1))
                 for k, v in ids.items()}
        vectors = tf.reshape(baseline[None] + alphas[:, None, None, None] * delta[None],
                             tf.concat([[-1], tf.shape(events)[1:]], 0))
        presence = {f: tf.reshape(alphas[:, None, None] * real[None], [-1, time_steps])
                    for f in bag}
        with tf.GradientTape() as tape:
            tape.watch([vectors, presence])
            path_score = pick(_probabilities(classifier, encoder, vectors, tiled, presence),
                              tf.tile(class_index, [steps_per_pass]))
        vector_grad, grads = tape.gradient(path_score, [vectors, presence])
        # The reshapes lose the static shapes that the loop's variables must keep.
        gradient += tf.ensure_shape(tf.reduce_sum(tf.reshape(vector_grad, tf.concat(
            [[steps_per_pass], tf.shape(events)], 0)), axis=0), events.shape)
        presence_gradient = {f: presence_gradient[f] + tf.ensure_shape(tf.reduce_sum(
            tf.reshape(grads[f], [steps_per_pass, -1, time_steps]), 0), real.shape)
            for f in bag}
        return index + 1, gradient, presence_gradient

    _, gradient, presence_gradient = tf.while_loop(
        lambda index, *_: index < steps // steps_per_pass, one_pass,
        (tf.constant(0), tf.zeros_like(events), {f: tf.zeros_like(real) for f in bag}))
    steps = tf.cast(steps, tf.float32)
    gradient /= steps
    shares = zip(fields.field_shares(fields.field_vectors(ids)),
                 fields.field_shares(fields.field_vectors(hidden)), strict=True)
    per_field = []
    for spec, (share, baseline_share) in zip(encoder.features, shares, strict=True):
        value = tf.reduce_sum(tf.cast(share - baseline_share, tf.float32) * gradient, -1)
        if spec["name"] in presence_gradient:
            value += presence_gradient[spec["name"]] / steps
        per_field.append(value * real)
    field_attribution = tf.stack(per_field, axis=-1)
    attribution = tf.reduce_sum(field_attribution, axis=-1)
    gap = tf.abs(tf.reduce_sum(attribution, axis=-1) - (score - baseline_score))
    return {"score": score, "baseline_score": baseline_score, "attribution": attribution,
            "field_attribution": field_attribution, "padding_mask": mask,
            "class_index": class_index,
            "completeness_error": gap / tf.maximum(tf.abs(score - baseline_score), MIN_DELTA)}


def gradient_x_input(classifier, parsed: dict) -> dict:
    """Gradient times input, the one-step rival of integrated gradients (for comparison).

    The gradient of the score at the events, times their difference from the baseline;
    it does not add up to the score's change. Returns `integrated_gradients`' dict.
    """
    return integrated_gradients(classifier, parsed, steps=1, steps_per_pass=1, point="end")


def _probabilities(classifier, encoder, vectors, ids, presence):
    """The classifier's probabilities [B, C] from merged event vectors (dropout off)."""
    import tensorflow as tf

    embedding = encoder.encode(vectors, ids, training=False,
                               presence=presence or None)["embedding"]
    return classifier.head(classifier.norm(tf.cast(embedding, tf.float32)))


def explain(classifier, parsed: dict, steps: int = 32, tolerance: float = TOLERANCE,
            max_steps: int = MAX_STEPS, steps_per_pass: int = 8) -> dict:
    """`integrated_gradients`, the steps doubled for each user until completeness holds.

    The users whose `completeness_error` exceeds `tolerance` are run again, alone, with
    twice the steps, up to `max_steps`; the others keep their first result.

    Args:
        classifier: SequenceClassifier. A fine-tuned classifier.
        parsed: dict. A parsed batch.
        steps: int. Steps of the first try. Defaults to 32.
        tolerance: float. Largest `completeness_error` accepted. Defaults to 0.01.
        max_steps: int. The most steps tried. Defaults to `MAX_STEPS`.
        steps_per_pass: int. Steps evaluated in one pass. Defaults to 8.

    Returns:
        `integrated_gradients`' dict as numpy arrays, plus `steps` (int [B], the steps used
        for each user).
    """
    import tensorflow as tf

    steps_per_pass = min(steps_per_pass, steps)
    result = {k: np.array(v) for k, v in _compiled(classifier, steps, steps_per_pass)(
        parsed).items()}
    result["steps"] = np.full(len(result["score"]), steps)
    while steps * 2 <= max_steps:
        again = np.flatnonzero(result["completeness_error"] > tolerance)
        if not len(again):
            break
        steps *= 2
        rerun = _compiled(classifier, steps, steps_per_pass)(
            {k: tf.gather(v, again) for k, v in parsed.items()})
        for name, value in rerun.items():
            result[name][again] = np.asarray(value)
        result["steps"][again] = steps
    return result


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(classifier, steps: int, steps_per_pass: int):
    """`integrated_gradients` of a classifier, traced once for every step count."""
    import tensorflow as tf

    functions = _FUNCTIONS.setdefault(classifier, {})
    if steps_per_pass not in functions:
        model = weakref.ref(classifier)  # the function must not keep its key alive
        functions[steps_per_pass] = tf.function(
            lambda parsed, steps: integrated_gradients(model(), parsed, steps, steps_per_pass),
            reduce_retracing=True)
    return lambda parsed: functions[steps_per_pass](parsed, tf.constant(steps, tf.int32))


def load_classifier(model_dir: str):
    """Loads `classifier.keras` from a fine-tuning output folder.

    Raises:
        FileNotFoundError: the folder holds no classifier.
    """
    import keras

    import autorisk_tf.finetune  # noqa: F401 - registers SequenceClassifier
    import autorisk_tf.layers  # noqa: F401 - registers the layers

    path = fileio.join(model_dir, CLASSIFIER_FILE)
    if not os.path.exists(path) and "://" not in path:
        raise FileNotFoundError(f"{path} not found: fine-tune a classifier into {model_dir} "
                                "first (python -m autorisk_tf.finetune --output_dir ...)")
    return keras.models.load_model(path)


def read_planted(path: str, pattern: str = "takeover") -> dict:
    """The planted events of the simulator: user -> set of event times in milliseconds.

    Args:
        path: str. `planted_events.csv` of `autorisk_tf.simulate`.
        pattern: str. `takeover` (the tight triples) or `decoy`. Defaults to `takeover`.

    Returns:
        dict of str to set of int, as the sequences' `time/timestamp_ms` hold them.
    """
    import csv

    planted = {}
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["pattern"] == pattern:
                when = int(np.datetime64(row["event_time"], "ms").astype(np.int64))
                planted.setdefault(row["user_id"], set()).add(when)
    return planted


def scores(classifier, file_pattern: str, schema, batch_size: int = 64) -> dict:
    """Every user's score on some shards: key -> probability (of the top class if several)."""
    from autorisk_tf.data import reader
    from autorisk_tf.data import sequence_example as seqex

    result = {}
    for batch in reader.make_dataset(file_pattern.split(","), schema, batch_size):
        probabilities = np.asarray(classifier(batch, training=False)).max(axis=-1)
        result.update(zip((k.decode("utf-8") for k in batch[seqex.KEY].numpy()),
                          probabilities.tolist(), strict=True))
    return result


def top_events(result: dict, parsed: dict, schema, user: int, top_k: int,
               field_names: list[str]) -> list[dict]:
    """The `top_k` events of one user with the largest attribution, as plain dicts.

    Args:
        result: dict. `explain`'s numpy arrays for the batch.
        parsed: dict. The parsed batch, as numpy arrays.
        schema: Schema. Its fields name the values shown.
        user: int. Row of the batch.
        top_k: int. Events kept.
        field_names: list of str. The encoder's features, in `field_attribution` order.

    Returns:
        list of `{rank, index, timestamp_ms, attribution, values: {field: str},
        shares: {feature: float}}`, largest attribution first.
    """
    from autorisk_tf.data import sequence_example as seqex

    length = int(result["padding_mask"][user].sum())
    attribution = result["attribution"][user, :length]
    order = np.argsort(-attribution, kind="stable")[:top_k]
    shown = [name for name in field_names if name in {f.name for f in schema.fields}]
    rows = []
    for rank, index in enumerate(order, start=1):
        values = {}
        for field in schema.fields:
            value = parsed[seqex.field_feature(field.name)][user, index]
            values[field.name] = (value.decode("utf-8") if isinstance(value, bytes)
                                  else "" if np.isnan(value) else f"{value:g}")
        shares = result["field_attribution"][user, index]
        rows.append({"rank": rank, "index": int(index),
                     "timestamp_ms": int(parsed[seqex.TIMESTAMP][user, index]),
                     "attribution": float(attribution[index]), "values": values,
                     "shares": {name: float(shares[field_names.index(name)])
                                for name in shown}})
    return rows


def explain_split(classifier, file_pattern: str, schema, top_k: int = 5, steps: int = 32,
                  batch_size: int = 16, full: bool = False, tolerance: float = TOLERANCE,
                  keys=None, max_steps: int = MAX_STEPS) -> tuple[list[dict], dict]:
    """Explains every user of some shards.

    Args:
        classifier: SequenceClassifier. A fine-tuned classifier.
        file_pattern: str. Shards (glob, or several comma-separated).
        schema: Schema. The schema the shards were written with.
        top_k: int. Events kept per user. Defaults to 5.
        steps: int. First step count (`explain` doubles it as needed). Defaults to 32.
        batch_size: int. Users per batch. Defaults to 16.
        full: bool. Keep the whole attribution vector per user. Defaults to False.
        tolerance: float. Completeness accepted. Defaults to 0.01.
        keys: collection of str or None. Explain only these users. Defaults to None (all).
        max_steps: int. The most steps a user is given. Defaults to `MAX_STEPS`.

    Returns:
        `(rows, summary)`: one dict per user (`key`, `score`, `baseline_score`,
        `completeness_error`, `steps`, `length`, `top_events`, and `attribution` with
        `full`), and a summary (`users`, `max_completeness_error`, `steps`).
    """
    import tensorflow as tf

    from autorisk_tf.data import reader
    from autorisk_tf.data import sequence_example as seqex

    names = [spec["name"] for spec in classifier.embedder.encoder.features]
    paths = sorted({p for pattern in file_pattern.split(",") if pattern
                    for p in tf.io.gfile.glob(pattern)})
    if not paths:
        raise ValueError(f"no shards match {file_pattern}")
    serialized = reader.records(paths)
    if keys is not None:
        serialized = reader.of_keys(serialized, keys)
    rows = []
    for batch in serialized.batch(batch_size).map(lambda s: reader.parse_batch(s, schema)):
        result = explain(classifier, batch, steps, tolerance, max_steps)
        parsed = {k: v.numpy() for k, v in batch.items()}
        for user, key in enumerate(parsed[seqex.KEY]):
            length = int(result["padding_mask"][user].sum())
            row = {"key": key.decode("utf-8"), "score": float(result["score"][user]),
                   "baseline_score": float(result["baseline_score"][user]),
                   "completeness_error": float(result["completeness_error"][user]),
                   "steps": int(result["steps"][user]), "length": length,
                   "top_events": top_events(result, parsed, schema, user, top_k, names)}
            if full:
                row["attribution"] = result["attribution"][user, :length].tolist()
            rows.append(row)
    if not rows:
        raise ValueError(f"no sequences in {file_pattern}"
                         + (" hold the keys asked for" if keys is not None else ""))
    errors = [row["completeness_error"] for row in rows]
    return rows, {"users": len(rows), "max_completeness_error": max(errors),
                  "mean_completeness_error": float(np.mean(errors)),
                  "steps": max(row["steps"] for row in rows)}


def define_flags() -> None:
    """Defines the command-line flags (only when the module runs as a script)."""
    flags.DEFINE_string("model_dir", None, "Fine-tuning output folder (holds classifier.keras).")
    flags.DEFINE_string("data", None, "Output folder of beam.preprocess.")
    flags.DEFINE_string("split", "test", "Split to explain: train, valid, test, all, or a "
                        "comma-separated list.")
    flags.DEFINE_string("output", None, "Output folder (explanations.parquet, summary.json).")
    flags.DEFINE_integer("top_k", 5, "Events kept per user, largest attribution first.")
    flags.DEFINE_integer("steps", 32, "Integration steps of the first try (doubled until the "
                         "attributions add up to the score's change within --tolerance).")
    flags.DEFINE_integer("max_steps", MAX_STEPS, "The most steps a user is given.")
    flags.DEFINE_float("tolerance", TOLERANCE, "Completeness gap accepted, relative to "
                       f"max(|score - baseline score|, {MIN_DELTA}).")
    flags.DEFINE_integer("batch_size", 16, "Users per batch.")
    flags.DEFINE_bool("full", False, "Also write every event's attribution per user.")
    flags.DEFINE_list("keys", None, "Explain only these users (comma-separated keys).")


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    require_flags("model_dir", "data", "output")
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.embed import split_patterns

    try:
        pattern = split_patterns(FLAGS.data, FLAGS.split)
        schema = Artifacts.load(fileio.join(FLAGS.data, "artifacts")).schema
        classifier = load_classifier(FLAGS.model_dir)
        rows, summary = explain_split(classifier, pattern, schema, FLAGS.top_k, FLAGS.steps,
                                      FLAGS.batch_size, FLAGS.full, FLAGS.tolerance,
                                      FLAGS.keys, FLAGS.max_steps)
    except (ValueError, FileNotFoundError, OSError) as e:
        sys.exit(f"error: {e}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(FLAGS.output, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(FLAGS.output,
                                                            "explanations.parquet"))
    fileio.write_text(os.path.join(FLAGS.output, "summary.json"),
                      json.dumps(summary, indent=1) + "\n")
    print(f"explained {summary['users']} users ({summary['steps']} steps; largest "
          f"completeness gap {summary['max_completeness_error']:.2%}): "
          f"{FLAGS.output}/explanations.parquet")
    top = max(rows, key=lambda row: row["score"])
    print(f"highest score: {top['key']} {top['score']:.3f} (baseline {top['baseline_score']:.3f})")
    for event in top["top_events"]:
        values = " ".join(v for v in event["values"].values() if v)
        print(f"  {event['rank']}. event {event['index']:>4} {event['attribution']:+.3f}  {values}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
