"""Pre-training benchmark: throughput and time to a fixed masked-event loss.

Four parts, every configuration in its own process, the Transformer baseline in the same run:

1. Throughput: the Pretrainer's masked-event train step (3 blocks, D=128, FFN 256, batch 8)
   on batches of exactly N events per sequence (ids drawn from the simulated data's
   vocabularies, texts from its distinct item names) at N = 512, 2048, 4096: events/s,
   sequences/s (median step after warm-up) and the step in 4096x4096 matmuls measured in
   the same run. `--baseline DIR` also times the library of an older checkout on the same
   batches (`vs_baseline`: its step time over ours).
2. Convergence: the same model trained on simulated users (max_len 512) until its smoothed
   masked-event training loss first reaches `--target_loss`; wall-clock seconds and steps.
3. Multi-worker: two local worker processes (MultiWorkerMirroredStrategy over TF_CONFIG,
   `python -m autorisk_tf.train`) train the small config on the simulated users; the step
   time is the difference of the wall times of two run lengths over the extra steps, so
   start-up and tracing cancel out. `--note` labels the row (e.g. the code measured).
4. Few labels: with the first N labelled training users, logistic regression on the
   pre-trained encoder's embeddings vs the same encoder trained supervised from scratch
   (fine-tuned end to end on the same N labels); validation AUC on `is_risk` and `takeover`,
   mean and range over `--seeds` (one seed's AUC moves by several hundredths).

  python benchmarks/train_bench.py [--lengths 512,2048,4096] [--target_loss 5.5]
      [--convergence_steps 400] [--precision float32] [--seeds 0,1,2]
      [--parts throughput,convergence,multi_worker,few_labels] [--note TEXT]
      [--baseline /tmp/older-checkout]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A `--baseline` child imports the library of another checkout (this script's code).
sys.path.insert(0, os.environ.get("TRAIN_BENCH_LIBRARY", ROOT))

MODEL = {"width": 128, "num_blocks": 3, "ffn_dim": 256, "num_heads": 4, "kernel_size": 7,
         "block_size": 64}
BLOCK_TYPES = {"encoder": "conv_attention", "transformer": "transformer"}


def _config(block_type, batch, steps, precision, seed=0):
    from autorisk_tf.training.config import config_from_dict

    return config_from_dict({
        "model": {**MODEL, "block_type": BLOCK_TYPES[block_type]},
        "input": {"batch_size": batch, "bucket_boundaries": [64, 128, 256], "seed": seed},
        "training": {"steps": steps, "warmup_steps": 20, "checkpoint_every": 10**6,
                     "log_every": 10**6, "precision": precision}})


def _text_rows(data, trainer, batches=20):
    """Distinct token rows of each text field in the first training batches of `data`."""
    import numpy as np

    from autorisk_tf.data import pipeline

    texts = [spec["name"] for spec in trainer.feature_specs if spec["kind"] == "text"]
    rows = {name: [] for name in texts}
    for batch in pipeline.id_batches(f"{data}/train/*.tfrecord", trainer.artifacts.schema,
                                     trainer.preprocessor, trainer.config.input,
                                     training=False).take(batches):
        for name in texts:
            ids = batch[name].numpy()
            rows[name].append(ids[batch["padding_mask"].numpy().astype(bool)])
    return {name: np.unique(np.concatenate(value), axis=0) for name, value in rows.items()}


def throughput(data, block_type, length, batch, steps, precision):
    """Median masked-event train step on [batch, length] synthetic id batches.

    Categorical and numeric ids are drawn uniformly from their vocabularies; each event's
    text is one of the distinct token rows of the data's first training batches, drawn
    uniformly (item names repeat across events, as in real logs).
    """
    import tempfile

    import numpy as np
    import tensorflow as tf

    from autorisk_tf.data import pipeline
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer

    trainer = Pretrainer(Artifacts.load(f"{data}/artifacts"),
                         _config(block_type, batch, 10**6, precision), tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    ids = {"padding_mask": np.ones((batch, length), bool)}
    texts = _text_rows(data, trainer)
    for spec in trainer.feature_specs:
        if spec["kind"] == "text":
            pool = texts[spec["name"]]
            ids[spec["name"]] = pool[rng.integers(0, len(pool), (batch, length))]
        else:
            ids[spec["name"]] = rng.integers(4, spec["vocab_size"], (batch, length))
        ids[spec["name"]] = ids[spec["name"]].astype("int32")
    batches = pipeline.with_seeds(tf.data.Dataset.from_tensors(ids).repeat(), 0)
    examples = batches.map(trainer._examples)
    iterator = iter(trainer.strategy.experimental_distribute_dataset(examples))
    step = trainer._make_step(("masked_event",))  # masked events only
    weights = {"masked_event": tf.constant(1.0)}
    float(step(iterator, weights)["loss"])  # trace and warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(step(iterator, weights)["loss"])
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"seconds": seconds, "events_per_s": batch * length / seconds,
            "sequences_per_s": batch / seconds,
            "distinct_texts": {name: len(pool) for name, pool in texts.items()}}


def convergence(data, block_type, batch, steps, target, precision):
    """Seconds and steps until the smoothed masked-event loss reaches `target`."""
    import tempfile

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer

    trainer = Pretrainer(Artifacts.load(f"{data}/artifacts"),
                         _config(block_type, batch, steps, precision), tempfile.mkdtemp())
    trainer.fit(f"{data}/train/*.tfrecord", verbose=0)
    smoothed, reached, trace = None, None, []
    for row in trainer.history:
        smoothed = row["mlm/loss"] if smoothed is None else 0.9 * smoothed + 0.1 * row["mlm/loss"]
        if reached is None and smoothed <= target:
            reached = row
        if row["step"] % 10 == 0:
            trace.append([row["step"], round(row["seconds"], 2), round(smoothed, 4)])
    return {"final_smoothed_loss": smoothed, "steps": steps,
            "total_seconds": trainer.history[-1]["seconds"],
            "reached_step": reached and reached["step"],
            "reached_seconds": reached and reached["seconds"], "trace": trace}


def few_labels(data, batch, steps, precision, counts, seed):
    """Validation AUC with N labels: pre-training + LR vs supervised from scratch."""
    import tempfile

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.embed import embed
    from autorisk_tf.evaluate import lr_auc
    from autorisk_tf.finetune import finetune
    from autorisk_tf.training import Pretrainer

    artifacts = Artifacts.load(f"{data}/artifacts")
    config = _config("encoder", batch, steps, precision, seed)
    trainer = Pretrainer(artifacts, config, tempfile.mkdtemp())
    trainer.fit(f"{data}/train/*.tfrecord", verbose=0)
    _, train_x, train_labels = embed(trainer.embedder(), f"{data}/train/*.tfrecord",
                                     artifacts.schema)
    _, valid_x, valid_labels = embed(trainer.embedder(), f"{data}/valid/*.tfrecord",
                                     artifacts.schema)
    rows = []
    for label in ("is_risk", "takeover"):
        for count in counts:
            pretrained = lr_auc(train_x[:count], train_labels[label][:count].astype(float),
                                valid_x, valid_labels[label].astype(float))
            scratch = Pretrainer(artifacts, config, tempfile.mkdtemp()).embedder()
            _, metrics = finetune(scratch, data, artifacts.schema, label, epochs=10,
                                  batch_size=32, max_train_labels=count, verbose=0)
            rows.append({"label": label, "labels": count, "seed": seed,
                         "pretrained_lr_auc": pretrained,
                         "supervised_from_scratch_auc": metrics["valid_auc"]})
    return {"rows": rows}


def multi_worker(data, work_dir, steps):
    """Seconds per step of two local workers: (time of 5 + steps) - (time of 5) over steps."""
    import socket
    import tempfile

    def run(total):
        sockets = [socket.socket() for _ in range(2)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        workers = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
        for sock in sockets:
            sock.close()
        model_dir = tempfile.mkdtemp(dir=work_dir)
        processes = []
        for index in range(2):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "autorisk_tf.train", "--data", data, "--model_dir",
                 model_dir, "--config", os.path.join(ROOT, "autorisk_tf/configs/small.yaml"),
                 "--steps", str(total), "--eval_batches", "0", "--verbose", "0",
                 "--set", "curriculum.quick_thought_start=null"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for process in processes:
            _, stderr = process.communicate(timeout=3600)
            if process.returncode:
                raise RuntimeError(stderr.strip().splitlines()[-1])
        with open(os.path.join(model_dir, "metrics.json")) as f:
            return json.load(f)["seconds"]

    short, long = run(5), run(5 + steps)
    return {"workers": 2, "steps": steps, "step_seconds": (long - short) / steps}


def _prepare(work_dir):
    from autorisk_tf import simulate
    from beam import preprocess

    data = os.path.join(work_dir, "train_bench_data")
    if not os.path.exists(os.path.join(data, "_SUCCESS")):
        raw = os.path.join(work_dir, "train_bench_raw")
        simulate.write_dataset(raw, seed=11, num_users=3000, num_shards=4)
        preprocess.run(["--input", f"{raw}/events/*.csv", "--schema",
                        os.path.join(ROOT, "autorisk_tf/schemas/simulated.yaml"),
                        "--labels", f"{raw}/labels.csv", "--output_dir", data,
                        "--max_len", "512", "--overwrite"])
    return data


def _matmul_gflops():
    """GFLOP/s of a float32 4096x4096 matmul on this machine now (`encoder_bench`'s)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from encoder_bench import matmul_gflops

    return matmul_gflops()


def _in_matmuls(seconds, gflops):
    """`seconds` as a number of 4096x4096 matmuls at `gflops`."""
    return round(seconds / (2 * 4096**3 / gflops / 1e9), 2)


def _child(args, library=ROOT):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TRAIN_BENCH_LIBRARY": library}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                         capture_output=True, text=True, cwd=library, env=env)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048,4096")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after a warm-up")
    parser.add_argument("--convergence_steps", type=int, default=400)
    parser.add_argument("--convergence_batch", type=int, default=16)
    parser.add_argument("--target_loss", type=float, default=5.5,
                        help="masked-event loss (sum over fields) to reach")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--label_counts", default="100,300,1000")
    parser.add_argument("--seeds", default="0,1,2",
                        help="seeds of the few-labels part (initial weights, masks, order)")
    parser.add_argument("--multi_worker_steps", type=int, default=40)
    parser.add_argument("--note", default="", help="label of this run's multi_worker row")
    parser.add_argument("--parts", default="throughput,convergence,multi_worker,few_labels",
                        help="parts to run; the others' rows are kept from --json")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "bench_out"))
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "train_bench.json"))
    parser.add_argument("--baseline", default=None,
                        help="another checkout (a git worktree of an older commit): its "
                             "library's throughput rows run in the same invocation, and "
                             "`vs_baseline` is its step time over ours")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, data, block_type, value = args.worker
        if kind == "throughput":
            result = throughput(data, block_type, int(value), args.batch, args.steps,
                                args.precision)
        elif kind == "few_labels":
            result = few_labels(data, args.convergence_batch, args.convergence_steps,
                                args.precision, [int(n) for n in value.split(",")], args.seed)
        else:
            result = convergence(data, block_type, args.convergence_batch,
                                 args.convergence_steps, float(value), args.precision)
        print(json.dumps(result))
        return

    data = _prepare(args.work_dir)
    common = ["--batch", str(args.batch), "--steps", str(args.steps), "--precision",
              args.precision, "--convergence_steps", str(args.convergence_steps),
              "--convergence_batch", str(args.convergence_batch)]
    parts = args.parts.split(",")
    rows = []
    kept = 0
    if os.path.exists(args.json):  # parts not run keep their rows from the last run
        with open(args.json) as f:
            earlier = json.load(f)
        rows = [r for r in earlier["rows"] if r["part"] not in parts
                or (r["part"] == "multi_worker" and r.get("note") != args.note)]
        for row in rows:  # files from before rows carried their own time
            row.setdefault("measured", earlier.get("time_of_run"))
    kept = len(rows)
    if "throughput" in parts:
        gflops = _matmul_gflops()  # the yardstick, measured next to the steps
    for length in [int(n) for n in args.lengths.split(",")] if "throughput" in parts else []:
        for block_type in BLOCK_TYPES:
            command = ["--worker", "throughput", data, block_type, str(length), *common]
            result = _child(command)
            if "seconds" in result:
                result["step_in_matmuls"] = _in_matmuls(result["seconds"], gflops)
                result["matmul_gflops"] = round(gflops, 1)
            if args.baseline and "seconds" in result:
                old = _child(command, os.path.abspath(args.baseline))
                if "seconds" in old:
                    result["baseline_seconds"] = old["seconds"]
                    result["vs_baseline"] = round(old["seconds"] / result["seconds"], 2)
                else:
                    result["baseline_error"] = old.get("error")
            rows.append({"part": "throughput", "model": block_type, "length": length, **result})
            print(json.dumps(rows[-1]), flush=True)
    for block_type in BLOCK_TYPES if "convergence" in parts else []:
        result = _child(["--worker", "convergence", data, block_type, str(args.target_loss),
                         *common])
        rows.append({"part": "convergence", "model": block_type, **result})
        print(json.dumps(rows[-1]), flush=True)

    if "multi_worker" in parts:
        gflops = _matmul_gflops()  # the yardstick, measured next to the steps
        try:
            result = multi_worker(data, args.work_dir, args.multi_worker_steps)
            result["step_in_matmuls"] = _in_matmuls(result["step_seconds"], gflops)
        except RuntimeError as e:
            result = {"error": str(e)}
        result["matmul_gflops"] = round(gflops, 1)
        rows.append({"part": "multi_worker", "note": args.note, **result})
        print(json.dumps(rows[-1]), flush=True)

    for seed in [int(s) for s in args.seeds.split(",")] if "few_labels" in parts else []:
        result = _child(["--worker", "few_labels", data, "encoder", args.label_counts,
                         "--seed", str(seed), *common])
        rows.extend({"part": "few_labels", **row} for row in result.get("rows", []))
        if "error" in result:
            rows.append({"part": "few_labels", "seed": seed, **result})
        print(json.dumps(result), flush=True)

    print("\n| length | model | step s | step in matmuls | events/s | sequences/s | "
          "speed-up vs Transformer | baseline step s | vs baseline |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if row["part"] != "throughput":
            continue
        base = next(r for r in rows if r["part"] == "throughput"
                    and r["model"] == "transformer" and r["length"] == row["length"])
        if "error" in row:
            print(f"| {row['length']} | {row['model']} | {row['error']} | | | | | | |")
            continue
        ratio = (f"{base['seconds'] / row['seconds']:.2f}" if "seconds" in base else "")
        print(f"| {row['length']} | {row['model']} | {row['seconds']:.3f} | "
              f"{row.get('step_in_matmuls', '')} | {row['events_per_s']:,.0f} | "
              f"{row['sequences_per_s']:.1f} | {ratio} | "
              f"{row.get('baseline_seconds', 0) and round(row['baseline_seconds'], 3) or ''} | "
              f"{row.get('vs_baseline', '')} |")
    print(f"\n| model | steps to loss {args.target_loss} | seconds to loss | "
          f"smoothed loss after {args.convergence_steps} steps | seconds for all steps |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        if row["part"] == "convergence" and "error" not in row:
            print(f"| {row['model']} | {row['reached_step']} | "
                  f"{row['reached_seconds'] and round(row['reached_seconds'], 1)} | "
                  f"{row['final_smoothed_loss']:.3f} | {row['total_seconds']:.1f} |")
    print("\n| label | labels | pre-trained + LR AUC, mean (min-max) | "
          "supervised from scratch AUC, mean (min-max) |")
    print("|---|---:|---:|---:|")
    few = [r for r in rows if r["part"] == "few_labels" and "error" not in r]
    for label, count in dict.fromkeys((r["label"], r["labels"]) for r in few):
        runs = [r for r in few if r["label"] == label and r["labels"] == count]
        cells = []
        for key in ("pretrained_lr_auc", "supervised_from_scratch_auc"):
            values = [r[key] for r in runs]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"| {label} | {count} | {cells[0]} | {cells[1]} |")
    for row in rows:
        if row["part"] == "multi_worker" and "error" not in row:
            print(f"\nmulti-worker ({row['note'] or 'this code'}): {row['step_seconds']:.3f} s "
                  f"per step, {row['step_in_matmuls']} matmuls of 4096^2")
    measured = time.strftime("%Y-%m-%dT%H:%M:%S")
    for row in rows[kept:]:  # rows kept from earlier runs keep their own time
        row["measured"] = measured
    with open(args.json, "w") as f:
        json.dump({"machine": f"{platform.machine()} {os.cpu_count()} cpus",
                   "device": "cpu", "precision": args.precision, "model": MODEL,
                   "batch": args.batch, "target_loss": args.target_loss, "rows": rows,
                   }, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
