"""Lift probe: what lifts the hand-made feature pool's GBDT on the real tasks, when added.

  python benchmarks/lift_probe.py --work bench_out/real [--tasks bought_after,bought_again]
      [--seeds 0,1,2] [--config autorisk_tf/configs/real.yaml] [--no-supervised]

(`--seeds ""` runs the rows built by hand alone, with no pre-training; `--gbdt_seed N`
gives every GBDT another random_state, to see how much a lift moves with it.)

Reads what a `real_data_bench.py` run left under `--work` (each task's event, label and
feature tables, its preprocessed sequences and its `run_seed<N>` pre-training folders; a
seed whose folder is missing is pre-trained first, as the benchmark would). For each task,
the GBDT on the hand-made features (`evaluate.gbdt`, out-of-fold scores over the benchmark's
5 stratified folds) against the same GBDT with, added to the features:

- `activity_windows`: per customer, active days and events in windows of days before the
  cut-off (the last event where there is none), the last gap and the spread of the gaps
  between active days: a richer recency profile than the pool's;
- `bag_svd32` (tasks with item ids): the SVD-32 of the binary bag of items;
- `activity_windows_bag_svd32`: both;
- `calendar_months`: per calendar month of the history, active days and the log of the
  value spent (the product of `VALUE_COLUMNS`, summed; the pool has neither a seasonal
  profile nor a spend per line);
- `raw_history`: the last `HISTORY_EVENTS` events themselves as columns, newest first, each
  as its age in days and the value of every numeric field of the schema (`last_events`).
  Where a customer's whole history fits (its `complete_share` of the labelled customers),
  the GBDT sees every number that any embedding of the history is computed from, the
  categorical and text fields aside: on a log whose events hold only a time and numbers
  (CDNOW), a model-free ceiling on what an embedding could add to the pool;
- `raw_history_shuffled`: the same columns with the customers permuted (a fixed seed): the
  control, what columns without information add to the pool;
- `bag_lr_score` (tasks with item ids): the bag-of-items LR's score (C 0.1), out-of-fold
  within the training folds: the most a linear model on the items adds, in one column;
- `bag_lr_score_calendar_months`: both: item and time information the pool lacks, built
  by hand with the raw events in view, as a bound for what an embedding could add;
- per pre-training seed, the embeddings three ways: `embeddings_raw` (every column, as
  `real_data_bench.py`'s lift row), `embeddings_pca16` (their first 16 principal
  components, fitted on the training folds) and `embeddings_pca16_lr_score` (those plus an
  LR's score on the embeddings, out-of-fold within the training folds); and, where the
  embedding has an `ids` part, `embeddings_without_ids`: every other pooling's part (the
  contextual states and the mean of the input vectors) without the projected bag of ids.

Late fusion (`fusion_*` rows; not a joined pool): the GBDT's out-of-fold scores averaged
with another model's out-of-fold scores over the same 5 folds, as logits standardised
within each fold, at a fixed weight (`FUSION_WEIGHT`): each row's two scores come from
models fitted without it (`late_fusion`).

- `fusion_handmade_lr`: an LR on the same hand-made features (missing values imputed by
  the training folds' means): the control, what a second model of the pool alone adds;
- `fusion_bag_svd32_lr` (tasks with item ids): the SVD-32 baseline's LR;
- `fusion_embeddings_lr`, per seed: the embeddings' LR, C by inner CV;
- `fusion_supervised_encoder` (with `--supervised`): the encoder of `--config` trained
  from new weights on the labels of the training folds (`few_labels.Finetuner`, epochs
  chosen on a held-out quarter, as the benchmark's fine-tuning from scratch): a ceiling
  on what this encoder can find in the sequences for the task, labels included.

Each row gives the AUC and the lift over the GBDT alone with a bootstrap 95% interval.
Prints a table and merges the rows into `benchmarks/lift_probe.json` (`save_rows`: each row
replaces the one of its task, probe and seeds; the rest are kept), each with the time it was
measured and, for the rows of a pre-training seed, the config it was pre-trained with.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import real_data_bench as bench  # noqa: E402

from autorisk_tf import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JSON = os.path.join(HERE, "lift_probe.json")
# Window edges in days before the reference time: [0, 30), [30, 60), ..., [270, inf).
WINDOW_DAYS = (0, 30, 60, 90, 180, 270)
DAY_MS = 86_400_000
# Dataset -> event columns whose product is an event's value (`calendar_months`).
VALUE_COLUMNS = {"online_retail": ("quantity", "unit_price"), "cdnow": ("dollar_value",)}
# Events per customer that `raw_history` keeps as columns: the whole history of 99.8% of
# CDNOW's customers before its cut-off.
HISTORY_EVENTS = 20
# Weight of the other model's logit in a late fusion with the GBDT's (fixed, not tuned).
FUSION_WEIGHT = 0.3


def activity_windows(keys: list[str], event_keys: list[str], timestamps_ms: np.ndarray,
                     reference_ms: int, edges: tuple[int, ...] = WINDOW_DAYS) -> np.ndarray:
    """Per-key activity by window of days before a reference time.

    Args:
        keys: list of str [N]. The customers, in row order.
        event_keys: list of str [M]. Each event's customer.
        timestamps_ms: int array [M]. Each event's time (ms since the epoch).
        reference_ms: int. The cut-off; days are counted back from it.
        edges: tuple of int. Window starts in days (ascending, from 0); the last is open.

    Returns:
        float [N, 2 * len(edges) + 2]: distinct active days per window, events per window,
        the gap in days between the last two active days and the standard deviation of the
        gaps (NaN with too few active days). A key without events gets zeros and NaNs.
    """
    bounds = list(edges) + [np.inf]
    index = {k: i for i, k in enumerate(keys)}
    per_key: dict[int, list[int]] = {}
    for key, ts in zip(event_keys, timestamps_ms, strict=True):
        if key in index:
            per_key.setdefault(index[key], []).append(int(ts))
    out = np.zeros((len(keys), 2 * len(edges) + 2))
    out[:, -2:] = np.nan
    for row, stamps in per_key.items():
        stamps = np.asarray(stamps)
        ages = (reference_ms - stamps) / DAY_MS
        # Calendar days (UTC), newest first, as days back from the reference.
        days = (reference_ms - np.unique(stamps // DAY_MS)[::-1] * DAY_MS) / DAY_MS
        for w, (low, high) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            out[row, w] = np.sum((days >= low) & (days < high))
            out[row, len(edges) + w] = np.sum((ages >= low) & (ages < high))
        gaps = np.diff(days)
        if len(gaps):
            out[row, -2] = gaps[0]
        if len(gaps) > 1:
            out[row, -1] = gaps.std()
    return out


def calendar_months(keys: list[str], event_keys: list[str], timestamps_ms: np.ndarray,
                    values: np.ndarray) -> np.ndarray:
    """Per-key activity and value by calendar month (UTC) of the events' span.

    Args:
        keys: list of str [N]. The customers, in row order.
        event_keys: list of str [M]. Each event's customer.
        timestamps_ms: int array [M]. Each event's time (ms since the epoch).
        values: float array [M]. Each event's value (negative for a return).

    Returns:
        float [N, 2 * months], months from the first event's to the last event's: distinct
        active days per month, then log1p of the month's summed value (0 below 0).
    """
    months = timestamps_ms.astype("datetime64[ms]").astype("datetime64[M]").astype(int)
    days = timestamps_ms // DAY_MS
    first, count = int(months.min()), int(months.max() - months.min()) + 1
    index = {k: i for i, k in enumerate(keys)}
    active = np.zeros((len(keys), count))
    spent = np.zeros((len(keys), count))
    seen = set()
    for key, month, day, value in zip(event_keys, months, days, values, strict=True):
        row = index.get(key)
        if row is None:
            continue
        spent[row, month - first] += value
        if (row, day) not in seen:
            seen.add((row, day))
            active[row, month - first] += 1
    return np.concatenate([active, np.log1p(np.maximum(spent, 0))], axis=1)


def last_events(keys: list[str], event_keys: list[str], timestamps_ms: np.ndarray,
                values: np.ndarray, reference_ms: int, count: int = HISTORY_EVENTS
                ) -> np.ndarray:
    """Per-key raw history as columns: the last `count` events, newest first.

    Args:
        keys: list of str [N]. The customers, in row order.
        event_keys: list of str [M]. Each event's customer.
        timestamps_ms: int array [M]. Each event's time (ms since the epoch).
        values: float array [M, F]. Each event's numbers (one column per numeric field).
        reference_ms: int. The cut-off; ages are counted back from it.
        count: int. Events kept per key.

    Returns:
        float [N, count * (1 + F)]: for the newest event, then the one before it, and so
        on, its age in days before the reference and its F numbers. NaN where a key has
        fewer events. Of events at the same time, the later row of the table counts as
        the newer.
    """
    index = {k: i for i, k in enumerate(keys)}
    width = 1 + values.shape[1]
    out = np.full((len(keys), count, width), np.nan)
    filled = np.zeros(len(keys), dtype=int)
    # newest first; a stable sort keeps the table's order among equal times, reversed
    for e in np.argsort(timestamps_ms, kind="stable")[::-1]:
        row = index.get(event_keys[e])
        if row is None or filled[row] == count:
            continue
        out[row, filled[row], 0] = (reference_ms - timestamps_ms[e]) / DAY_MS
        out[row, filled[row], 1:] = values[e]
        filled[row] += 1
    return out.reshape(len(keys), count * width)


def without_part(parts: dict, kind: str) -> np.ndarray | None:
    """The embedding without one pooling's part, or None where it has no such part.

    Args:
        parts: dict. `{pooling: [N, width]}` (`SequenceEncoder.split_embedding`), in order.
        kind: str. The pooling to leave out.

    Returns:
        float [N, width of the other parts], or None where `kind` is absent or 0 wide.
    """
    if kind not in parts or not parts[kind].shape[1]:
        return None
    return np.concatenate([np.asarray(p) for k, p in parts.items() if k != kind], axis=1)


def late_fusion(base: np.ndarray, other: np.ndarray, folds: np.ndarray,
                weight: float = FUSION_WEIGHT) -> np.ndarray:
    """Weighted average of two models' out-of-fold scores, on a common scale per fold.

    Each fold's scores come from models fitted on the other folds, and separately fitted
    networks (early-stopped at different epochs) need not share a scale, which would cost
    their pooled scores AUC that no fold's ranking loses. So each model's logits are
    standardised within each fold (by the fold's own mean and spread, no labels) before
    they are averaged.

    Args:
        base: float [N]. The first model's probabilities.
        other: float [N]. The second model's probabilities of the same rows.
        folds: int [N]. Each row's fold.
        weight: float. The second model's weight (the first gets 1 - weight).

    Returns:
        float [N]: the fused standardised logits.
    """
    return (1 - weight) * fold_logits(base, folds) + weight * fold_logits(other, folds)


def fold_logits(p: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Logits of probabilities, standardised (mean 0, standard deviation 1) fold by fold."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    z = np.log(p) - np.log1p(-p)
    for fold in np.unique(folds):
        rows = folds == fold
        z[rows] = (z[rows] - z[rows].mean()) / max(z[rows].std(), 1e-12)
    return z


def supervised_scores(embedder, data: str, schema, label: str, keys: list[str],
                      y: np.ndarray, seed: int = 0, steps: int = 300) -> np.ndarray:
    """Out-of-fold scores of the encoder trained from new weights on the labels.

    Over the benchmark's 5 stratified folds (`random_state=0`): for each fold, a
    `few_labels.Finetuner` trains a copy of the embedder's architecture from new weights
    (drawn from `seed`) on the other folds' users, its epoch count chosen on a held-out
    quarter of them (`few_labels.early_stopped_auc`, up to about `steps` steps), and scores
    the fold's users.

    Args:
        embedder: SequenceEmbedder. Its architecture (its weights are not used).
        data: str. Output folder of beam.preprocess (every user in its train split).
        schema: Schema. Its schema.
        label: str. Binary label column.
        keys: list of str [N]. The labelled users, in row order.
        y: int [N]. Their labels.
        seed: int. Seed of the new weights, the shuffling and the held-out quarter.
        steps: int. Training steps the most epochs tried add up to
            (`few_labels.finetune_epochs`; at least 3 epochs).

    Returns:
        float [N]: each user's score from the run that did not train on it.
    """
    from autorisk_tf import few_labels

    scores = np.full(len(keys), np.nan)
    # one classifier for the five runs: it scores every user, each fold's are kept
    runner = few_labels.Finetuner(embedder, data, schema, label, keys, test_split="train")
    for train, test in evaluate.cv_splits(y):
        few_labels.early_stopped_auc(runner, False, [keys[i] for i in train], y[train],
                                     few_labels.finetune_epochs(len(train), steps=steps), seed)
        fold_scores = runner.test_scores()
        scores[test] = [fold_scores[keys[i]] for i in test]
    return scores


def fusion_row(task: str, probe: str, y: np.ndarray, base: np.ndarray, other: np.ndarray,
               **extra) -> dict:
    """AUC of the late fusion of two models' out-of-fold scores, and its lift over the first's.

    `alone_auc` is the second model's, its logits standardised fold by fold as in the fusion.
    """
    from sklearn.metrics import roc_auc_score

    folds = evaluate.fold_index(y)
    fused = late_fusion(base, other, folds)
    lift, low, high = evaluate.bootstrap_auc_lift(y, base, fused)
    alone = roc_auc_score(y, fold_logits(other, folds))
    return {"task": task, "probe": probe, "auc": round(float(roc_auc_score(y, fused)), 4),
            "alone_auc": round(float(alone), 4), "lift": round(lift, 4),
            "lift_ci95": [round(low, 4), round(high, 4)], **extra}


def handmade_lr():
    """An LR on the hand-made features: missing values imputed by the means, C 0.1."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    return make_pipeline(SimpleImputer(), evaluate.logistic_regression(0.1))


def lift_row(task: str, probe: str, y: np.ndarray, base: np.ndarray, x: np.ndarray,
             make_model, **extra) -> dict:
    """Cross-validated AUC of a model on `x` and its lift over the baseline's scores."""
    aucs, scores = evaluate.cv_auc(x, y, make_model)
    lift, low, high = evaluate.bootstrap_auc_lift(y, base, scores)
    return {"task": task, "probe": probe, "auc": round(float(np.mean(aucs)), 4),
            "lift": round(lift, 4), "lift_ci95": [round(low, 4), round(high, 4)], **extra}


def read_event_columns(path: str, schema, columns: tuple[str, ...] = ()
                       ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each event's key, time (ms) and numbers from an event table of `real_data_bench.py`.

    Args:
        path: str. The event table (CSV, or whitespace-separated as the schema says).
        schema: Schema. Its key, timestamp and delimiter.
        columns: tuple of str. Numeric columns to read.

    Returns:
        `(keys [M], times_ms int64 [M], values float [M, len(columns)])`.
    """
    import csv

    from autorisk_tf.data.events import parse_timestamp_ms

    with open(path, encoding="utf-8", newline="") as f:
        if schema.csv_delimiter == "whitespace":
            header = f.readline().split()
            rows = (dict(zip(header, line.split(), strict=True)) for line in f
                    if line.strip())
        else:
            rows = csv.DictReader(f, delimiter=schema.csv_delimiter)
        events = [(row[schema.key], parse_timestamp_ms(row[schema.timestamp_column],
                                                        schema.timestamp_format),
                   [float(row[c]) for c in columns])
                  for row in rows]
    return ([k for k, _, _ in events], np.array([t for _, t, _ in events], dtype=np.int64),
            np.array([v for _, _, v in events], dtype=float).reshape(len(events),
                                                                     len(columns)))


def save_rows(path: str, rows: list[dict]) -> None:
    """Merges a run's rows into the JSON: a row replaces the one of its task, probe and seeds.

    A row's key is its task, probe, pre-training `seed` and `gbdt_seed` (0 where absent).
    Rows of a key that the run did not measure are kept as they were, so a
    run of some probes (`--seeds ""`, `--no-supervised`) leaves the others' figures.

    Args:
        path: str. The JSON file (`{"rows": [...]}`; created if missing).
        rows: list of dict. The run's rows, each with its `measured` time.
    """
    def key(row):
        return row["task"], row["probe"], row.get("seed"), row.get("gbdt_seed", 0)

    old = json.load(open(path))["rows"] if os.path.exists(path) else []
    new = {key(r): r for r in rows}
    merged = [new.pop(key(r), r) for r in old] + list(new.values())
    with open(path, "w") as f:
        json.dump({"rows": merged}, f, indent=1)
        f.write("\n")


def main(argv=None) -> int:
    """Runs the probe; prints the table and writes the JSON."""
    parser = bench.work_folder_parser(__doc__.split("\n")[0], "bought_after,bought_again",
                                      "0,1,2", JSON)
    parser.add_argument("--supervised", action=argparse.BooleanOptionalAction, default=True,
                        help="Add the `fusion_supervised_encoder` row: the encoder trained "
                             "from new weights on the labels, 5 times a task.")
    parser.add_argument("--gbdt_seed", type=int, default=0,
                        help="random_state of every GBDT (the pool's alone included); rows "
                             "of another seed than 0 record it and are kept apart.")
    args = parser.parse_args(argv)
    gbdt = functools.partial(evaluate.gbdt, args.gbdt_seed)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.data.events import parse_timestamp_ms
    from autorisk_tf.training import Pretrainer, load_config

    logging.set_verbosity(logging.ERROR)
    rows = []
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for task in [t for t in args.tasks.split(",") if t]:
        spec = bench.TASKS[task]
        folder = os.path.join(args.work, task)
        keys, feats, _, y = bench.labelled_features(folder, spec["label"])
        data = os.path.join(folder, "data")
        artifacts = Artifacts.load(os.path.join(data, "artifacts"))
        schema = artifacts.schema
        columns = tuple(f.column for f in schema.fields_of_kind("numeric"))
        event_keys, times, numbers = read_event_columns(
            os.path.join(folder, spec["events"]), schema, columns)
        values = numbers[:, [columns.index(c) for c in VALUE_COLUMNS[spec["dataset"]]]].prod(1)
        cutoff = spec["as_of"]
        reference = (parse_timestamp_ms(cutoff, schema.timestamp_format) if cutoff
                     else int(times.max()) + DAY_MS)
        windows = activity_windows(keys, event_keys, times, reference)
        base_aucs, base = evaluate.cv_auc(feats, y, gbdt)
        print(f"== {task}: hand-made GBDT {np.mean(base_aucs):.4f}", flush=True)
        rows.append({"task": task, "probe": "handmade_gbdt",
                     "auc": round(float(np.mean(base_aucs)), 4)})
        months = calendar_months(keys, event_keys, times, values)
        history = last_events(keys, event_keys, times, numbers, reference)
        shuffled = history[np.random.default_rng(0).permutation(len(keys))]
        extras = {"activity_windows": (windows, gbdt),
                  "calendar_months": (months, gbdt),
                  "raw_history": (history, gbdt),
                  "raw_history_shuffled": (shuffled, gbdt)}
        per_key = collections.Counter(event_keys)
        complete = {"raw_history": {"complete_share": round(float(np.mean(
            [per_key[k] <= HISTORY_EVENTS for k in keys])), 4)}}
        if spec["item"]:
            item_keys, items = bench.read_event_items(os.path.join(folder, spec["events"]),
                                                      spec["item"])
            bag = evaluate.bag_of_items(keys, item_keys, items)[0]
            svd = evaluate.svd_features(bag)
            extras.update(
                bag_svd32=(svd, gbdt),
                activity_windows_bag_svd32=(np.concatenate([windows, svd], axis=1),
                                            gbdt),
                bag_lr_score=(bag.toarray(), functools.partial(
                    evaluate.CompactGBDT, feats.shape[1], components=0, lr_score=True,
                    standardise=False, seed=args.gbdt_seed)),
                bag_lr_score_calendar_months=(
                    np.concatenate([months, bag.toarray()], axis=1), functools.partial(
                        evaluate.CompactGBDT, feats.shape[1] + months.shape[1],
                        components=0, lr_score=True, standardise=False,
                        seed=args.gbdt_seed)))
        for probe, (extra, make_model) in extras.items():
            rows.append(lift_row(task, probe, y, base, np.concatenate([feats, extra], axis=1),
                                 make_model, **complete.get(probe, {})))
            print(f"  {probe:<30} {rows[-1]['auc']:.4f} lift {rows[-1]['lift']:+.4f}",
                  flush=True)
        others = {"fusion_handmade_lr": evaluate.cv_auc(feats, y, handmade_lr)[1]}
        if spec["item"]:
            others["fusion_bag_svd32_lr"] = evaluate.cv_auc(
                svd, y, lambda: evaluate.logistic_regression(0.1))[1]
        for probe, other in others.items():
            rows.append(fusion_row(task, probe, y, base, other))
            print(f"  {probe:<30} {rows[-1]['auc']:.4f} lift {rows[-1]['lift']:+.4f}",
                  flush=True)
        for seed in seeds:
            trainer = Pretrainer(artifacts, load_config(args.config, {"input.seed": seed}),
                                 os.path.join(folder, f"run_seed{seed}"))
            trainer.fit(os.path.join(data, "train", "*.tfrecord"), verbose=0)
            embedder = trainer.embedder()
            embeddings = bench.embeddings_of(embedder, data, schema, keys)
            both = np.concatenate([feats, embeddings], axis=1)
            rest = without_part(embedder.encoder.split_embedding(embeddings), "ids")
            if rest is not None:
                rows.append(lift_row(task, "embeddings_without_ids", y, base,
                                     np.concatenate([feats, rest], axis=1), gbdt, seed=seed))
                print(f"  seed {seed}: {'embeddings_without_ids':<24} {rows[-1]['auc']:.4f} "
                      f"lift {rows[-1]['lift']:+.4f}", flush=True)
            for probe, make_model in (
                    ("embeddings_raw", gbdt),
                    ("embeddings_pca16", functools.partial(
                        evaluate.CompactGBDT, feats.shape[1], seed=args.gbdt_seed)),
                    ("embeddings_pca16_lr_score", functools.partial(
                        evaluate.CompactGBDT, feats.shape[1], lr_score=True,
                        seed=args.gbdt_seed))):
                rows.append(lift_row(task, probe, y, base, both, make_model, seed=seed))
                print(f"  seed {seed}: {probe:<24} {rows[-1]['auc']:.4f} lift "
                      f"{rows[-1]['lift']:+.4f}", flush=True)
            rows.append(fusion_row(task, "fusion_embeddings_lr", y, base, evaluate.cv_auc(
                embeddings, y, evaluate.tuned_logistic_regression)[1], seed=seed))
            print(f"  seed {seed}: {'fusion_embeddings_lr':<24} {rows[-1]['auc']:.4f} lift "
                  f"{rows[-1]['lift']:+.4f}", flush=True)
            if args.supervised and seed == seeds[0]:
                tic = time.time()
                rows.append(fusion_row(task, "fusion_supervised_encoder", y, base,
                                       supervised_scores(embedder, data, schema,
                                                         spec["label"], keys, y, seed),
                                       seed=seed, seconds=round(time.time() - tic)))
                print(f"  seed {seed}: {'fusion_supervised_encoder':<24} "
                      f"{rows[-1]['auc']:.4f} (alone {rows[-1]['alone_auc']:.4f}) lift "
                      f"{rows[-1]['lift']:+.4f}", flush=True)
    print("| task | probe | seed | AUC | fused model alone | lift over hand-made GBDT (95% CI) |")
    print("|---|---|---|---:|---:|---|")
    for r in rows:
        lift = (f"{r['lift']:+.4f} ({r['lift_ci95'][0]:+.4f} to {r['lift_ci95'][1]:+.4f})"
                if "lift" in r else "")
        alone = f"{r['alone_auc']:.4f}" if "alone_auc" in r else ""
        print(f"| {r['task']} | {r['probe']} | {r.get('seed', '')} | {r['auc']:.4f} | {alone} "
              f"| {lift} |")
    measured = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    for r in rows:
        r["measured"] = measured
        if args.gbdt_seed:
            r["gbdt_seed"] = args.gbdt_seed
        if "seed" in r:
            r["config_file"] = os.path.relpath(args.config, ROOT)
    save_rows(args.json, rows)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
