"""Pre-training curve on the real tasks: downstream AUC against the number of steps.

  python benchmarks/pretrain_curve.py --work bench_out/real [--tasks bought_after,...]
      [--seeds 0] [--steps 0,150,300,600,900,1800] [--config autorisk_tf/configs/real.yaml]

Reads the task folders that a `real_data_bench.py` run left under `--work` (each task's
label and feature tables and its preprocessed sequences). For each task, seed and step
budget, pre-trains afresh with `training.steps` set to the budget (the learning rate's
warm-up and cosine decay span the budget, as in a run configured with it; 0 steps: random
weights), embeds the labelled customers and scores embeddings + LR (C 0.1, the benchmark's
5 stratified folds), with the pre-training loss (mean of the last 50 steps) and wall time.

Answers "is the config's step count long enough": where the curve flattens, more steps buy
nothing. Prints a table (mean and range over seeds) and writes
`benchmarks/pretrain_curve.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import real_data_bench as bench  # noqa: E402

from autorisk_tf import evaluate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JSON = os.path.join(HERE, "pretrain_curve.json")
# The reported pre-training loss is the mean over a run's last this many steps.
LOSS_STEPS = 50


def summarise_curve(runs: list[dict]) -> list[dict]:
    """One row per (task, steps): mean, min and max AUC and mean seconds over the seeds.

    Args:
        runs: list of dict. One per pre-training, with `task`, `steps`, `seed`, `auc` and
            `pretrain_seconds`.

    Returns:
        Rows sorted by task (in order of first appearance) and steps, each with `task`,
        `steps`, `auc` (mean, 4 decimals), `auc_range` ([min, max]), `seeds` and
        `pretrain_seconds` (mean, 1 decimal).
    """
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["steps"]), []).append(run)
    order = list(dict.fromkeys(run["task"] for run in runs))
    rows = []
    for (task, steps), group in sorted(groups.items(),
                                       key=lambda item: (order.index(item[0][0]), item[0][1])):
        aucs = [r["auc"] for r in group]
        rows.append({"task": task, "steps": steps, "auc": round(float(np.mean(aucs)), 4),
                     "auc_range": [min(aucs), max(aucs)],
                     "seeds": [r["seed"] for r in group],
                     "pretrain_seconds": round(float(np.mean(
                         [r["pretrain_seconds"] for r in group])), 1)})
    return rows


def write_curve(path: str, config: str, runs: list[dict]) -> None:
    """Writes the runs so far and their summary rows.

    Called after every run, so a stopped run keeps what it measured.
    """
    with open(path, "w") as f:
        json.dump({"measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                   "config_file": os.path.relpath(config, ROOT),
                   "rows": summarise_curve(runs), "runs": runs}, f, indent=1)
        f.write("\n")


def main(argv=None) -> int:
    """Runs the curve; prints the table and writes the JSON."""
    parser = bench.work_folder_parser(__doc__.split("\n")[0], ",".join(bench.TASKS), "0",
                                      JSON)
    parser.add_argument("--steps", default="0,150,300,600,900,1800",
                        help="Comma-separated step budgets, each pre-trained afresh.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer, load_config

    logging.set_verbosity(logging.ERROR)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(bench.TASKS))
    if unknown:
        sys.exit(f"error: unknown task(s) {unknown}; known: {sorted(bench.TASKS)}")
    budgets = [int(s) for s in args.steps.split(",") if s]
    runs = []
    for task in tasks:
        folder = os.path.join(args.work, task)
        data = os.path.join(folder, "data")
        if not os.path.isdir(os.path.join(data, "artifacts")):
            sys.exit(f"error: {folder} has no preprocessed data; run real_data_bench.py "
                     f"--tasks {task} --work {args.work} first")
        keys, _, _, y = bench.labelled_features(folder, bench.TASKS[task]["label"])
        artifacts = Artifacts.load(os.path.join(data, "artifacts"))
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            for steps in budgets:
                model_dir = os.path.join(folder, f"curve_seed{seed}_steps{steps}")
                shutil.rmtree(model_dir, ignore_errors=True)
                trainer = Pretrainer(artifacts, load_config(
                    args.config, {"input.seed": seed, "training.steps": steps}), model_dir)
                tic = time.time()
                trainer.fit(os.path.join(data, "train", "*.tfrecord"), verbose=0)
                seconds = time.time() - tic
                last = [h["loss"] for h in trainer.history[-LOSS_STEPS:]]
                x = bench.embeddings_of(trainer.embedder(), data, artifacts.schema, keys)
                aucs, _ = evaluate.cv_auc(x, y, lambda: evaluate.logistic_regression(0.1))
                shutil.rmtree(model_dir, ignore_errors=True)
                runs.append({"task": task, "seed": seed, "steps": steps,
                             "auc": round(float(np.mean(aucs)), 4),
                             "pretrain_seconds": round(seconds, 1),
                             "final_loss": round(float(np.mean(last)), 4) if last else None})
                print(f"  {task} seed {seed}, {steps} steps: embeddings + LR "
                      f"{runs[-1]['auc']:.4f}, loss {runs[-1]['final_loss']}, "
                      f"{seconds:.0f} s", flush=True)
                write_curve(args.json, args.config, runs)
    rows = summarise_curve(runs)
    print("| task | steps | embeddings + LR (range over seeds) | pre-training s |")
    print("|---|---:|---|---:|")
    for r in rows:
        low, high = r["auc_range"]
        print(f"| {r['task']} | {r['steps']} | {r['auc']:.4f} ({low:.4f}-{high:.4f}) | "
              f"{r['pretrain_seconds']:.0f} |")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
