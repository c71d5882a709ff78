"""Reason-code benchmark: the attributions against the planted takeover events.

For each simulation seed (`--seeds`, default 7 as `make demo`, 5 and 11) simulates 1,000
users, preprocesses them (max_len 256), pre-trains `small.yaml` (300 steps) and fine-tunes
it on `takeover` (learning rate 1e-3, 12 epochs, head probed first). For the takeover users
of the valid and test splits that the classifier flags (score > 0.5) it reports the share
whose 5 most attributed events hold at least 2 of the 3 planted events
(`planted_events.csv`), and the share whose most attributed event is one of them, ranked by
integrated gradients (`autorisk_tf.explain`), by gradient x input, by the attention
pooling's weights and at random; and the completeness gap; pooled over the seeds and per
seed. The `explain` signature's latency is measured by `benchmarks/serving_bench.py`.

  python benchmarks/explain_bench.py [--work bench_out/explain] [--seeds 7,5,11]
      [--json PATH]

Steps whose outputs are already in `--work` are not run again.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
JSON = os.path.join(ROOT, "benchmarks", "explain_bench.json")
TOP_K = 5


def _run(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL)


def prepare(work: str, seed: int) -> dict:
    """Simulates, preprocesses, pre-trains and fine-tunes (each step once); returns paths."""
    paths = {"raw": f"{work}/raw", "data": f"{work}/data", "pretrained": f"{work}/pretrained",
             "classifier": f"{work}/takeover"}
    started = time.time()
    if not os.path.exists(f"{paths['raw']}/planted_events.csv"):
        _run("autorisk_tf.simulate", "--output_dir", paths["raw"], "--num_users", "1000",
             "--seed", str(seed), "--num_shards", "4")
    if not os.path.exists(f"{paths['data']}/artifacts"):
        _run("beam.preprocess", "--input", f"{paths['raw']}/events/*.csv", "--schema",
             "autorisk_tf/schemas/simulated.yaml", "--labels", f"{paths['raw']}/labels.csv",
             "--output_dir", paths["data"], "--max_len", "256")
    if not os.path.exists(f"{paths['pretrained']}/encoder.keras"):
        _run("autorisk_tf.train", "--config", "autorisk_tf/configs/small.yaml", "--data",
             paths["data"], "--model_dir", paths["pretrained"], "--eval_batches", "0",
             "--verbose", "0")
    if not os.path.exists(f"{paths['classifier']}/classifier.keras"):
        _run("autorisk_tf.finetune", "--model_dir", paths["pretrained"], "--data",
             paths["data"], "--label", "takeover", "--output_dir", paths["classifier"],
             "--epochs", "12", "--learning_rate", "1e-3")
    paths["prepare_seconds"] = round(time.time() - started, 1)
    return paths


def rankings(classifier, parsed, seed: int) -> dict:
    """Per method, the event indices [B, T] of each user ordered by attribution, and IG's."""
    from autorisk_tf.explain import explain, gradient_x_input

    ig = explain(classifier, parsed)
    mask = ig["padding_mask"]
    grad = gradient_x_input(classifier, parsed)["attribution"].numpy()
    encoder = classifier.embedder.encoder
    outputs = encoder(classifier.embedder.preprocessor(parsed), training=False)
    attention = encoder.attention_weights(outputs["sequence"],
                                          outputs["padding_mask"]).numpy()
    noise = np.random.default_rng(seed).random(mask.shape)
    order = {}
    for name, score in (("integrated gradients", ig["attribution"]),
                        ("gradient x input", grad), ("attention pooling weights", attention),
                        ("random ranking", noise)):
        order[name] = np.argsort(-np.where(mask, score, -np.inf), axis=1, kind="stable")
    return {"order": order, "ig": ig}


def planted_hits(paths: dict) -> dict:
    """The figures of every takeover user of the valid and test splits.

    Returns:
        `hits` (per method, per flagged user: do the top 5 hold >= 2 of the 3 planted events,
        is the top 1 one of them), and IG's `errors`, `deltas` and `steps` per user.
    """
    import tensorflow as tf

    from autorisk_tf.data import reader
    from autorisk_tf.data import sequence_example as seqex
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.explain import load_classifier, read_planted

    schema = Artifacts.load(f"{paths['data']}/artifacts").schema
    classifier = load_classifier(paths["classifier"])
    planted = read_planted(f"{paths['raw']}/planted_events.csv")
    shards = sorted(tf.io.gfile.glob(f"{paths['data']}/valid/*.tfrecord")
                    + tf.io.gfile.glob(f"{paths['data']}/test/*.tfrecord"))
    records = reader.of_keys(reader.records(shards), planted)
    out = {"hits": {}, "errors": [], "deltas": [], "steps": [], "seconds": 0.0}
    for batch in records.batch(16).map(lambda s: reader.parse_batch(s, schema)):
        started = time.time()
        result = rankings(classifier, batch, seed=len(out["errors"]))
        out["seconds"] += time.time() - started
        times = batch[seqex.TIMESTAMP].numpy()
        for user, key in enumerate(batch[seqex.KEY].numpy()):
            out["errors"].append(float(result["ig"]["completeness_error"][user]))
            out["deltas"].append(float(result["ig"]["score"][user]
                                       - result["ig"]["baseline_score"][user]))
            out["steps"].append(int(result["ig"]["steps"][user]))
            if result["ig"]["score"][user] <= 0.5:
                continue
            truth = planted[key.decode("utf-8")]
            for name, order in result["order"].items():
                top = times[user, order[user, :TOP_K]].tolist()
                out["hits"].setdefault(name, []).append((len(set(top) & truth) >= 2,
                                                         top[0] in truth))
    return out


def summary(runs: list[dict]) -> dict:
    """The figures of `planted_hits` runs pooled over their users."""
    hits = {name: [h for run in runs for h in run["hits"][name]] for name in runs[0]["hits"]}
    errors = [e for run in runs for e in run["errors"]]
    deltas = [d for run in runs for d in run["deltas"]]
    return {"takeover_users": len(errors), "flagged": len(next(iter(hits.values()))),
            "share_top5_holds_2_of_3": {name: round(float(np.mean([h[0] for h in v])), 3)
                                        for name, v in hits.items()},
            "share_top1_is_planted": {name: round(float(np.mean([h[1] for h in v])), 3)
                                      for name, v in hits.items()},
            "completeness_error_max": round(max(errors), 4),
            "within_1_percent": f"{sum(e <= 0.01 for e in errors)} of {len(errors)}",
            "score_minus_baseline_below_0.01": int(sum(abs(d) < 0.01 for d in deltas)),
            "completeness_error_mean": round(float(np.mean(errors)), 4),
            "steps_max": max(s for run in runs for s in run["steps"]),
            "seconds_per_user_all_methods": round(
                sum(run["seconds"] for run in runs) / len(errors), 3)}


def main() -> int:
    """Runs the benchmark, prints a table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=os.path.join(ROOT, "bench_out", "explain"))
    parser.add_argument("--json", default=JSON)
    parser.add_argument("--seeds", default="7,5,11",
                        help="Comma-separated simulation seeds, one data set and model each.")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    runs, by_seed, prepare_seconds = [], {}, 0.0
    for seed in seeds:
        paths = prepare(f"{args.work}/seed{seed}", seed)
        prepare_seconds += paths["prepare_seconds"]
        runs.append(planted_hits(paths))
        by_seed[str(seed)] = summary(runs[-1:])
    shares = summary(runs)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    report = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "seeds": seeds, **shares,
              "by_seed": by_seed, "prepare_seconds": round(prepare_seconds, 1)}
    print(f"| ranking ({shares['flagged']} flagged takeovers of {shares['takeover_users']}) "
          "| top-5 holds >= 2 of the 3 planted events | top-1 is a planted event |\n"
          "|---|---:|---:|")
    for name, share in shares["share_top5_holds_2_of_3"].items():
        print(f"| {name} | {share:.3f} | {shares['share_top1_is_planted'][name]:.3f} |")
    print(f"completeness gap: max {shares['completeness_error_max']:.2%}, mean "
          f"{shares['completeness_error_mean']:.2%}, within 1% for "
          f"{shares['within_1_percent']} users (up to {shares['steps_max']} steps); "
          f"{shares['score_minus_baseline_below_0.01']} users score within 0.01 of the "
          "baseline")
    for seed, figures in by_seed.items():
        print(f"seed {seed}: {figures['flagged']} flagged of {figures['takeover_users']}; "
              "integrated gradients' top 5 hold >= 2 of 3 for "
              f"{figures['share_top5_holds_2_of_3']['integrated gradients']:.3f}")
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
