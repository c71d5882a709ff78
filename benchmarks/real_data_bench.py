"""Real-data benchmark: pre-trained embeddings against the simplest strong baselines.

  python benchmarks/real_data_bench.py [--tasks country_non_uk,bought_after,bought_again]
      [--seeds 0,1,2] [--config autorisk_tf/configs/real.yaml] [--set section.key=value]
      [--finetune_labels 100,300,1000,all] [--finetune_seeds 0] [--finetune_draws 3]
      [--data_root ../shared/data]

Per task (`../shared/data/README.md`), with the project's own commands' code:

1. the dataset builder writes the event and label tables from the file in `--data_root`;
2. `beam.preprocess` writes every customer's sequence (all in the training split: the
   pre-training sees every customer, before the cut-off where there is one; no labels),
   in sorted shards (`--sorted_shards`: the same files on every run, so a pre-training
   seed repeats exactly);
   `beam.features` writes the hand-made feature pool;
3. baselines: LR on a binary bag of item ids (C=0.1), TruncatedSVD-32 of the L2-normalised
   bag + LR, GBDT on the hand-made features;
4. ours, for each pre-training seed: embeddings + LR; embeddings + hand-made features with
   GBDT (the lift over GBDT on the features alone, out-of-fold scores, bootstrap 95%
   interval); the wall time of the pre-training; LR on each pooling's part of the
   embedding alone (`pooling_<kind>_lr`: which part carries the task; `ids` is the
   projection of the binary bag of ids, to set against the SVD; `without_ids`, every
   other part together);
   with `--tuned_c` (the default), `*_lr_tuned_c` rows for the embeddings and both LR
   baselines: the same LR with its C chosen among `evaluate.C_GRID` by inner 5-fold CV
   on each training fold (a fixed C favours whichever input its scale suits; the fixed-C
   rows stay the reference protocol);
5. fine-tuning the pre-trained encoder (its head first fitted by logistic regression on
   the embeddings, C by inner CV: linear probing, then fine-tuning with the embedding
   tables kept as pre-trained) against the same encoder from
   scratch with 100, 300, 1,000 and all labels of the training folds, AUC on held-out
   fold 0, mean over 3 seeded label draws; each run's epoch count is chosen on a quarter
   of its labels held out, then the run is repeated on all of them
   (`--finetune_validation`).

AUC is the mean over 5 stratified folds (`random_state=0`) of the labelled customers.
Prints a table and writes `benchmarks/real_data_bench.json` after each task (rows of earlier
runs for other tasks are kept; `attempts` records every approach tried, with its figures and
the tasks it finished).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autorisk_tf import evaluate, few_labels  # noqa: E402
from autorisk_tf.datasets import cdnow, online_retail, physionet2012, tables  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JSON = os.path.join(HERE, "real_data_bench.json")
SCHEMAS = os.path.join(ROOT, "autorisk_tf", "schemas")
# task -> dataset, label column, item column (None: no item ids), schema, --as_of, events
# file, and the `--top_values` of its feature pool where not beam.features' default (every
# variable of PhysioNet gets its first/last/min/max/mean/count)
TASKS = {
    "country_non_uk": {"dataset": "online_retail", "label": "country_non_uk",
                       "item": "stock_code", "schema": "online_retail.yaml", "as_of": None,
                       "events": "events.csv"},
    "bought_after": {"dataset": "online_retail", "label": "bought_after", "item": "stock_code",
                     "schema": "online_retail.yaml", "as_of": online_retail.CUTOFF,
                     "events": "events.csv"},
    "bought_again": {"dataset": "cdnow", "label": "bought_again", "item": None,
                     "schema": "cdnow.yaml", "as_of": cdnow.CUTOFF, "events": "events.txt"},
    **{label: {"dataset": "physionet2012", "label": label, "item": None,
               "schema": "physionet2012.yaml", "as_of": physionet2012.WINDOW_END,
               "events": "events.csv", "top_values": 48}
       for label in ("death", "long_stay")},
}
SOURCES = {"online_retail": os.path.join("online-retail", "online_retail.csv.gz"),
           "cdnow": os.path.join("cdnow", "CDNOW_master.txt"),
           "physionet2012": os.path.join("physionet2012", "set-a.tar.gz")}
PHYSIONET_OUTCOMES = os.path.join("physionet2012", "Outcomes-a.txt")


def build_task_tables(task: str, data_root: str, folder: str) -> dict:
    """Writes the task's event and label tables into `folder`; returns the builder's counts."""
    spec = TASKS[task]
    source = os.path.join(data_root, SOURCES[spec["dataset"]])
    if spec["dataset"] == "cdnow":
        with tables.open_text(source) as f:
            events, labels, counts = cdnow.build_tables(f)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, spec["events"]), "w", encoding="utf-8") as f:
            f.write(" ".join(cdnow.EVENT_COLUMNS) + "\n")
            f.writelines(" ".join(event) + "\n" for event in events)
        tables.write_csv(os.path.join(folder, "labels.csv"), ("customer_id", "bought_again"),
                         labels)
        return counts
    if spec["dataset"] == "physionet2012":
        with tables.open_text(os.path.join(data_root, PHYSIONET_OUTCOMES)) as f:
            events, labels, counts = physionet2012.build_tables(
                physionet2012.read_stays(source), f)
        physionet2012.write_tables(events, labels, folder)
        return {**counts, "events": counts["observations"]}
    events, labels, counts = online_retail.build_tables(online_retail.read_rows(source), task)
    tables.write_csv(os.path.join(folder, spec["events"]), online_retail.EVENT_COLUMNS, events)
    tables.write_csv(os.path.join(folder, "labels.csv"), online_retail.LABEL_COLUMNS, labels)
    return counts


def task_schema(path: str, field_overrides: dict, folder: str) -> str:
    """The task's schema file, or a copy under `folder` with field keys overridden.

    Args:
        path: str. The shipped schema.
        field_overrides: dict. `"field.key"` to value; fields the schema lacks are skipped.
        folder: str. Where the changed copy is written.

    Returns:
        The path of the schema to use (validated when changed).
    """
    import yaml

    from autorisk_tf.data.schema import load_schema

    if not field_overrides:
        return path
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for item, value in field_overrides.items():
        name, _, key = item.partition(".")
        for field in doc["fields"]:
            if field["name"] == name:
                field[key] = value
    changed = os.path.join(folder, os.path.basename(path))
    os.makedirs(folder, exist_ok=True)
    with open(changed, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    load_schema(changed)
    return changed


def read_labels(path: str, column: str) -> dict[str, int]:
    """`{key: 0 or 1}` of a label table's column (rows with an empty cell are skipped).

    The key is the table's first column.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        key = reader.fieldnames[0]
        return {row[key]: int(row[column]) for row in reader if row[column] != ""}


def per_category_columns(columns: list[str]) -> list[int]:
    """Indices of the per-category numeric summaries (`<field>_by<i>_<stat>`) of a table.

    On PhysioNet, the first/last/min/max/mean/count per variable of the reference figures
    in `../shared/data/physionet2012/README.md`.
    """
    return [i for i, c in enumerate(columns) if "_by" in c and c.rsplit("_", 1)[-1] in
            ("first", "last", "min", "max", "mean", "count")]


def read_event_items(path: str, item_column: str) -> tuple[list[str], list[str]]:
    """The key and item of every event of a CSV event table."""
    keys, items = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            keys.append(row["customer_id"])
            items.append(row[item_column])
    return keys, items


def labelled_features(folder: str, label: str) -> tuple[list[str], np.ndarray, list[str],
                                                     np.ndarray]:
    """A task folder's hand-made features of its labelled customers, with their labels.

    Args:
        folder: str. The task's work folder (`features/` and `labels.csv` in it).
        label: str. The label column.

    Returns:
        `(keys, features [N, F], columns, y [N])`, customers without a label left out, and
        columns without any value left out (a per-category summary past the categories
        the data has; scikit-learn's GBDT cannot bin them).
    """
    keys, feats, columns = evaluate.load_features(os.path.join(folder, "features"))
    labels = read_labels(os.path.join(folder, "labels.csv"), label)
    labelled = np.array([k in labels for k in keys])
    keys, feats = list(keys[labelled]), feats[labelled]
    valued = np.isfinite(feats).any(axis=0)
    return (keys, feats[:, valued], [c for c, v in zip(columns, valued, strict=True) if v],
            np.array([labels[k] for k in keys]))


def embeddings_of(embedder, data: str, schema, keys: list[str]) -> np.ndarray:
    """The embeddings of a preprocessed training split, in the order of `keys` [N, E]."""
    from autorisk_tf.embed import embed

    emb_keys, vectors, _ = embed(embedder, os.path.join(data, "train", "*.tfrecord"), schema,
                                 128)
    order = {k: i for i, k in enumerate(emb_keys)}
    return vectors[[order[k] for k in keys]]


def rfm_columns(columns: list[str]) -> list[int]:
    """Indices of the activity and numeric-statistics features of a feature table.

    No per-value shares, distinct counts or hour and weekday profiles: the counts, spend,
    recency, tenure and means pool of the reference figures in `../shared/data/README.md`.
    """
    dropped = ("_top", "_other_share", "_distinct", "_missing_share", "hour_", "dow_")
    return [i for i, c in enumerate(columns) if not any(part in c for part in dropped)]


def baseline_rows(task: str, keys: list[str], y: np.ndarray, features: np.ndarray,
                  columns: list[str], event_keys: list[str] | None, items: list[str] | None,
                  tuned_c: bool = False) -> tuple[list, dict]:
    """The baselines' rows and their out-of-fold scores (`gbdt_features` for the lift).

    With `tuned_c`, also both LR baselines with C chosen by inner CV (`*_lr_tuned_c`).
    """
    rows, scores = [], {}
    if items is not None:
        bag, _ = evaluate.bag_of_items(keys, event_keys, items)
        svd = evaluate.svd_features(bag)
        aucs, _ = evaluate.cv_auc(bag, y, lambda: evaluate.logistic_regression(
            0.1, standardise=False))
        rows.append(_row(task, "bag_of_items_lr", aucs))
        aucs, _ = evaluate.cv_auc(svd, y, lambda: evaluate.logistic_regression(1.0))
        rows.append(_row(task, "svd32_lr", aucs))
        if tuned_c:
            aucs, _ = evaluate.cv_auc(bag, y, lambda: evaluate.tuned_logistic_regression(
                standardise=False))
            rows.append(_row(task, "bag_of_items_lr_tuned_c", aucs))
            aucs, _ = evaluate.cv_auc(svd, y, evaluate.tuned_logistic_regression)
            rows.append(_row(task, "svd32_lr_tuned_c", aucs))
    per_category = per_category_columns(columns)
    if per_category:
        # The reference pool of PhysioNet's README: its LR imputes medians, its GBDT NaNs.
        aucs, _ = evaluate.cv_auc(features[:, per_category], y, evaluate.imputed_lr)
        rows.append(_row(task, "handmade_per_category_lr", aucs))
        aucs, _ = evaluate.cv_auc(features[:, per_category], y, evaluate.gbdt)
        rows.append(_row(task, "handmade_per_category_gbdt", aucs))
    else:
        aucs, _ = evaluate.cv_auc(features[:, rfm_columns(columns)], y, evaluate.gbdt)
        rows.append(_row(task, "handmade_rfm_gbdt", aucs))
    aucs, scores["gbdt_features"] = evaluate.cv_auc(features, y, evaluate.gbdt)
    rows.append(_row(task, "handmade_gbdt", aucs))
    aucs, _ = evaluate.cv_auc(features, y, evaluate.imputed_lr)
    rows.append(_row(task, "handmade_lr", aucs))
    return rows, scores


def part_aucs(parts: dict, y: np.ndarray) -> dict:
    """Cross-validated AUC of LR (C 0.1) on each pooling's part of the embeddings.

    Where an `ids` part is there, also on all the other parts together (`without_ids`:
    what the contextual encoder knows beyond the bag projection).

    Args:
        parts: dict. Pooling kind to its columns [N, width] (`split_embedding`).
        y: int array [N]. Binary labels.

    Returns:
        Kind to mean fold AUC (4 decimals); a part of width 0 (`ids` on a schema without
        categorical fields) has none.
    """
    parts = {kind: part for kind, part in parts.items() if part.shape[1]}
    rest = [part for kind, part in parts.items() if kind != "ids"]
    if "ids" in parts and len(rest) > 1:
        parts["without_ids"] = np.concatenate(rest, axis=1)
    return {kind: round(float(np.mean(evaluate.cv_auc(
        part, y, lambda: evaluate.logistic_regression(0.1))[0])), 4)
        for kind, part in parts.items()}


def score_join_run(features: np.ndarray, x: np.ndarray, y: np.ndarray, base: np.ndarray,
                   seed: int) -> dict:
    """The hand-made GBDT with the embeddings joined as their LR's score, and its lift.

    `evaluate.CompactGBDT` with no components: one column, the out-of-fold score of an LR
    (C 0.1) on the embeddings, beside the hand-made features.

    Args:
        features: float [N, F]. The hand-made features.
        x: float [N, E]. The embeddings of the same rows.
        y: int [N]. Binary labels.
        base: float [N]. The hand-made GBDT's out-of-fold scores (the lift's baseline).
        seed: int. The pre-training seed (seeds the bootstrap of the lift's interval).

    Returns:
        `{"seed", "auc", "fold_aucs", "lift", "lift_ci95"}`.
    """
    aucs, joined = evaluate.cv_auc(np.concatenate([features, x], axis=1), y,
                                   lambda: evaluate.CompactGBDT(features.shape[1],
                                                                components=0, lr_score=True))
    lift, low, high = evaluate.bootstrap_auc_lift(y, base, joined, seed=seed)
    return {"seed": seed, "auc": round(float(np.mean(aucs)), 4),
            "fold_aucs": [round(a, 4) for a in aucs], "lift": round(lift, 4),
            "lift_ci95": [round(low, 4), round(high, 4)]}


def _row(task: str, method: str, aucs: list[float], **extra) -> dict:
    return {"task": task, "method": method, "auc": round(float(np.mean(aucs)), 4),
            "fold_aucs": [round(a, 4) for a in aucs], **extra}


def _summary(task: str, method: str, runs: list[dict], key: str = "auc", **extra) -> dict:
    values = [run[key] for run in runs]
    return {"task": task, "method": method, "auc": round(float(np.mean(values)), 4),
            "auc_min": round(float(np.min(values)), 4),
            "auc_max": round(float(np.max(values)), 4), "seeds": len(values),
            "runs": runs, **extra}


def work_folder_parser(description: str, tasks: str, seeds: str, json_path: str
                       ) -> argparse.ArgumentParser:
    """The arguments of a script that reads the `--work` folder of a run of this benchmark.

    Args:
        description: str. The script's one-line description.
        tasks: str. The default of `--tasks` (comma-separated names of `TASKS`).
        seeds: str. The default of `--seeds` (comma-separated pre-training seeds).
        json_path: str. The default of `--json`, where the script writes its results.

    Returns:
        A parser with `--work` (required), `--tasks`, `--seeds`, `--config` (default
        `configs/real.yaml`) and `--json`; the script adds its own arguments.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", required=True,
                        help="The --work folder of a real_data_bench.py run.")
    parser.add_argument("--tasks", default=tasks)
    parser.add_argument("--seeds", default=seeds)
    parser.add_argument("--config", default=os.path.join(ROOT, "autorisk_tf", "configs",
                                                         "real.yaml"))
    parser.add_argument("--json", default=json_path)
    return parser


def main(argv=None) -> int:
    """Runs the benchmark; prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--config", default=os.path.join(ROOT, "autorisk_tf", "configs",
                                                         "real.yaml"))
    parser.add_argument("--set", action="append", default=[],
                        help="Config override section.key=value (YAML value), repeatable.")
    parser.add_argument("--field_set", action="append", default=[],
                        help="Schema override field.key=value (YAML value), repeatable, for "
                             "the tasks whose schema has that field: "
                             "dollar_value.continuous=true.")
    parser.add_argument("--finetune_labels", default="100,300,1000,all",
                        help="Label counts of the fine-tuning comparison; empty skips it.")
    parser.add_argument("--finetune_seeds", default="0",
                        help="Pre-training seeds whose encoders are fine-tuned.")
    parser.add_argument("--finetune_draws", type=int, default=3,
                        help="Label draws per label count (seeds 0..N-1 of the draw, the "
                             "new weights and the shuffling); each row is their mean.")
    parser.add_argument("--finetune_probe", action=argparse.BooleanOptionalAction,
                        default=True, help="Pre-trained runs start their head from a "
                        "logistic regression on the embeddings (LP-FT); --no-finetune_probe "
                        "starts them from a random head.")
    parser.add_argument("--finetune_lr", type=float, default=few_labels.LEARNING_RATE,
                        help="Adam learning rate of the fine-tuning runs from scratch.")
    parser.add_argument("--finetune_pretrained_lr", type=float,
                        default=few_labels.PRETRAINED_LEARNING_RATE,
                        help="Adam learning rate of the runs from pre-trained weights.")
    parser.add_argument("--finetune_probe_c", type=float, default=None,
                        help="C of the probe's logistic regression; default: chosen by inner "
                             "CV on each run's labels.")
    parser.add_argument("--finetune_freeze_tables", action=argparse.BooleanOptionalAction,
                        default=True, help="Pre-trained runs keep their embedding tables "
                        "(`finetune.embedding_tables`) and fine-tune the rest.")
    parser.add_argument("--finetune_epochs", type=int, default=0,
                        help="0: enough epochs for about 300 steps, between 3 and 30.")
    parser.add_argument("--finetune_validation", type=float, default=0.25,
                        help="Share of each draw's labels held out to choose the epoch "
                             "count (0 to --finetune_epochs; 0 is the starting weights), "
                             "then the run is repeated on all of them "
                             "(`few_labels.early_stopped_auc`); 0 trains every run for "
                             "--finetune_epochs.")
    parser.add_argument("--tuned_c", action=argparse.BooleanOptionalAction, default=True,
                        help="Also report every LR row with its C chosen by inner CV "
                             "(`*_lr_tuned_c` rows).")
    parser.add_argument("--data_root", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--work", default=os.path.join(ROOT, "bench_out", "real"))
    parser.add_argument("--max_len", type=int, default=512)
    parser.add_argument("--attempt", default="",
                        help="Name of this run in the JSON's `attempts` (the config is kept).")
    parser.add_argument("--json", default=JSON)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import yaml
    from absl import logging

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer, load_config
    from beam import features as beam_features
    from beam import preprocess

    logging.set_verbosity(logging.ERROR)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    field_overrides = {}
    for item in args.field_set:
        key, _, value = item.partition("=")
        field_overrides[key] = yaml.safe_load(value)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    finetune_seeds = [int(s) for s in args.finetune_seeds.split(",") if s]
    sizes = [s for s in args.finetune_labels.split(",") if s]
    results = json.load(open(args.json)) if os.path.exists(args.json) else {}
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        sys.exit(f"error: unknown task(s) {unknown}; known: {sorted(TASKS)}")
    all_rows, pretrained = [], {}
    attempt = None
    if args.attempt:
        attempt = {"name": args.attempt, "overrides": overrides,
                   **({"field_overrides": field_overrides} if field_overrides else {}),
                   "config_file": os.path.relpath(args.config, ROOT), "tasks_done": [],
                   "figures": {}}
        results.setdefault("attempts", []).append(attempt)
    for task in tasks:
        spec = TASKS[task]
        folder = os.path.join(args.work, task)
        started = time.time()
        counts = build_task_tables(task, args.data_root, folder)
        events_path = os.path.join(folder, spec["events"])
        schema_path = task_schema(os.path.join(SCHEMAS, spec["schema"]), field_overrides,
                                  folder)
        data = os.path.join(folder, "data")
        preprocess.run(["--input", events_path, "--schema", schema_path, "--labels",
                        os.path.join(folder, "labels.csv"), "--output_dir", data,
                        "--split", "1,0,0", "--max_len", str(args.max_len),
                        "--num_shards", "4", "--sorted_shards", "--overwrite"])
        feature_args = ["--input", events_path, "--schema", schema_path, "--output_dir",
                        os.path.join(folder, "features"),
                        "--top_values", str(spec.get("top_values", 10)), "--overwrite"]
        if spec["as_of"]:
            feature_args += ["--as_of", spec["as_of"]]
        beam_features.run(feature_args)
        keys, feats, columns, y = labelled_features(folder, spec["label"])
        print(f"== {task}: {len(keys)} labelled customers ({y.mean():.3f} positive), "
              f"{counts['events']} events; tables in {time.time() - started:.0f} s", flush=True)
        event_keys = items = None
        if spec["item"]:
            event_keys, items = read_event_items(events_path, spec["item"])
        rows, scores = baseline_rows(task, keys, y, feats, columns, event_keys, items,
                                     args.tuned_c)
        for row in rows:
            print(f"  {row['method']:<28} AUC {row['auc']:.4f}", flush=True)
        artifacts = Artifacts.load(os.path.join(data, "artifacts"))
        config = load_config(args.config, {**overrides})
        lr_runs, gbdt_runs, score_runs, encoders, part_runs, tuned_runs = [], [], [], {}, {}, []
        for seed in seeds:
            # Tasks on the same events (PhysioNet's death and long_stay) share encoders.
            shared = (spec["dataset"], spec["as_of"], seed)
            if shared not in pretrained:
                model_dir = os.path.join(folder, f"run_seed{seed}")
                # Every run trains from scratch: a folder left by an earlier run would
                # otherwise be resumed from its checkpoint (and a finished one not trained).
                shutil.rmtree(model_dir, ignore_errors=True)
                trainer = Pretrainer(artifacts, load_config(args.config, {
                    **overrides, "input.seed": seed}), model_dir)
                tic = time.time()
                final = trainer.fit(os.path.join(data, "train", "*.tfrecord"), verbose=0)
                pretrained[shared] = (trainer.embedder(), time.time() - tic, final)
            embedder, seconds, final = pretrained[shared]
            encoders[seed] = embedder
            x = embeddings_of(embedder, data, artifacts.schema, keys)
            aucs, _ = evaluate.cv_auc(x, y, lambda: evaluate.logistic_regression(0.1))
            lr_runs.append({"seed": seed, "auc": round(float(np.mean(aucs)), 4),
                            "fold_aucs": [round(a, 4) for a in aucs],
                            "pretrain_seconds": round(seconds, 1),
                            "final_metrics": {k: round(v, 4) for k, v in final.items()
                                              if k.endswith(("loss", "accuracy"))}})
            if args.tuned_c:
                aucs, _ = evaluate.cv_auc(x, y, evaluate.tuned_logistic_regression)
                tuned_runs.append({"seed": seed, "auc": round(float(np.mean(aucs)), 4)})
                print(f"  seed {seed}: embeddings + LR, C by inner CV "
                      f"{tuned_runs[-1]['auc']:.4f}", flush=True)
            for kind, auc in part_aucs(embedder.encoder.split_embedding(x), y).items():
                part_runs.setdefault(kind, []).append({"seed": seed, "auc": auc})
                print(f"  seed {seed}: `{kind}` pooling alone + LR {auc:.4f}", flush=True)
            both = np.concatenate([feats, x], axis=1)
            aucs, both_scores = evaluate.cv_auc(both, y, evaluate.gbdt)
            lift, low, high = evaluate.bootstrap_auc_lift(y, scores["gbdt_features"],
                                                          both_scores, seed=seed)
            gbdt_runs.append({"seed": seed, "auc": round(float(np.mean(aucs)), 4),
                              "fold_aucs": [round(a, 4) for a in aucs],
                              "lift": round(lift, 4), "lift_ci95": [round(low, 4),
                                                                     round(high, 4)]})
            print(f"  seed {seed}: pre-training {seconds:.0f} s; embeddings + LR "
                  f"{lr_runs[-1]['auc']:.4f}; + hand-made GBDT {gbdt_runs[-1]['auc']:.4f} "
                  f"(lift {lift:+.4f} [{low:+.4f}, {high:+.4f}])", flush=True)
            score_runs.append(score_join_run(feats, x, y, scores["gbdt_features"], seed))
            print(f"  seed {seed}: embeddings' LR score + hand-made GBDT "
                  f"{score_runs[-1]['auc']:.4f} (lift {score_runs[-1]['lift']:+.4f} "
                  f"{score_runs[-1]['lift_ci95']})", flush=True)
        rows.append(_summary(task, "embeddings_lr", lr_runs))
        if tuned_runs:
            rows.append(_summary(task, "embeddings_lr_tuned_c", tuned_runs))
        rows.extend(_summary(task, f"pooling_{kind}_lr", runs)
                    for kind, runs in part_runs.items())
        for method, runs in (("embeddings_plus_handmade_gbdt", gbdt_runs),
                             ("embedding_score_plus_handmade_gbdt", score_runs)):
            rows.append(_summary(task, method, runs,
                                 lift=round(float(np.mean([r["lift"] for r in runs])), 4)))
        if sizes:
            rows.extend(finetune_rows(task, data, artifacts.schema, spec["label"], keys, y,
                                      {s: encoders[s] for s in finetune_seeds if s in encoders},
                                      sizes, args.finetune_epochs, args.finetune_draws,
                                      args.finetune_probe, args.finetune_lr,
                                      args.finetune_pretrained_lr,
                                      args.finetune_validation, args.finetune_probe_c,
                                      args.finetune_freeze_tables))
        for row in rows:
            row["measured"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            row["config"] = config.to_dict()
        all_rows.extend(rows)
        save_task_rows(args.json, results, task, rows, attempt)
        print(f"  {task}: rows written to {args.json}", flush=True)
    print_table(all_rows)
    print(f"wrote {args.json}")
    return 0


def save_task_rows(path: str, results: dict, task: str, rows: list[dict],
                   attempt: dict | None) -> None:
    """Replaces a task's rows in the results, records them in the attempt, writes the JSON.

    Called after each task, so a long run that stops early keeps the tasks it finished.

    Args:
        path: str. The JSON file (rewritten whole).
        results: dict. The benchmark's results (`rows`, `attempts`, ...), updated in place.
        task: str. The task whose rows these are; earlier rows of that task are dropped.
        rows: list of dict. The task's new rows.
        attempt: dict or None. This run's entry in `results["attempts"]`: it gets the
            task in `tasks_done` and each row's AUC under `figures` (`task/method`).
    """
    results["rows"] = [r for r in results.get("rows", []) if r["task"] != task] + rows
    if attempt is not None:
        attempt["tasks_done"].append(task)
        attempt["figures"].update({f"{task}/{r['method']}": r["auc"] for r in rows})
    results["protocol"] = ("5-fold stratified CV (random_state=0) over labelled customers, "
                           "mean fold AUC; pre-training on every customer's events before the "
                           "cut-off, no labels; fine-tuning on held-out fold 0")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")


def finetune_rows(task, data, schema, label, keys, y, encoders, sizes, epochs, draws,
                  probe, learning_rate=few_labels.LEARNING_RATE,
                  pretrained_learning_rate=few_labels.PRETRAINED_LEARNING_RATE,
                  validation=0.25, probe_c=None, freeze_tables=True) -> list[dict]:
    """Pre-trained encoder fine-tuned vs the same encoder from scratch, by label count.

    Training labels are drawn (stratified, seeds 0 to draws-1) from folds 1-4; AUC on fold
    0. A pre-trained run starts its head from a logistic regression on the embeddings
    (`few_labels.Finetuner`'s linear probe, C `probe_c`, None: by inner CV) when `probe`,
    and that probe alone, before any fine-tuning, gets rows of its own (`probe_<size>`);
    it keeps its embedding tables when `freeze_tables`. A run from scratch starts from
    random weights and trains all of them. With `validation` > 0, each run's epoch count
    (up to `epochs`, 0 included) is chosen on that share of its labels held out
    (`few_labels.early_stopped_auc`); each run records the count it chose.
    """
    train_idx, test_idx = next(evaluate.cv_splits(y))
    test_keys = [keys[i] for i in test_idx]
    runners = {seed: few_labels.Finetuner(embedder, data, schema, label, test_keys,
                                          test_split="train", probe=probe,
                                          learning_rate=learning_rate,
                                          pretrained_learning_rate=pretrained_learning_rate,
                                          freeze_tables=freeze_tables, probe_c=probe_c)
               for seed, embedder in encoders.items()}
    rows = []
    for size in sizes:
        chosen = {d: few_labels.draw_labels(train_idx, y, size, seed=d) for d in range(draws)}
        n = len(chosen[0])
        run_epochs = epochs or few_labels.finetune_epochs(n, steps=300)
        starts = {"probe": 0} if probe else {}
        starts.update(pretrained=run_epochs, scratch=run_epochs)
        for start, start_epochs in starts.items():
            runs = []
            for (seed, runner), draw in itertools.product(runners.items(), range(draws)):
                tic = time.time()
                run_keys = [keys[i] for i in chosen[draw]]
                if validation and start_epochs:
                    auc, trained = few_labels.early_stopped_auc(
                        runner, start != "scratch", run_keys, y[chosen[draw]], start_epochs,
                        draw, validation)
                else:
                    auc = runner.auc(start != "scratch", run_keys, start_epochs, draw)
                    trained = start_epochs
                runs.append({"seed": seed, "draw": draw, "auc": round(auc, 4),
                             "epochs": trained, "seconds": round(time.time() - tic, 1)})
            name = f"probe_{size}" if start == "probe" else f"finetune_{start}_{size}"
            row = _summary(task, name, runs, labels=n, max_epochs=start_epochs)
            print(f"  {start:<10} {size:>5} labels (epochs chosen "
                  f"{[r['epochs'] for r in runs]} of {start_epochs}): AUC "
                  f"{row['auc']:.4f}", flush=True)
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    """Prints the rows as a Markdown table."""
    print("| task | method | AUC | range over seeds | lift over hand-made GBDT (95% CI) |")
    print("|---|---|---:|---|---|")
    for r in rows:
        spread = f"{r['auc_min']:.3f}-{r['auc_max']:.3f}" if "auc_min" in r else ""
        lift = ""
        if "lift" in r:
            lows = [run["lift_ci95"][0] for run in r["runs"]]
            highs = [run["lift_ci95"][1] for run in r["runs"]]
            lift = f"{r['lift']:+.3f} ({min(lows):+.3f} to {max(highs):+.3f})"
        print(f"| {r['task']} | {r['method']} | {r['auc']:.3f} | {spread} | {lift} |")


if __name__ == "__main__":
    sys.exit(main())
