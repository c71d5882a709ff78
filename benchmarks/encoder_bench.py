"""Encoder benchmark: gated conv + block attention vs a full-attention Transformer.

Each (configuration, length) runs in its own process, `--repeats` times (3; the median step
time and its range are reported): a SequenceEncoder (3 blocks, D=128,
FFN 256, 4 heads) on batch 8 with a masked-event style head (softmax over the event types
at every step), trained with Adam. Reported: median train-step time after warm-up, peak RSS,
trainable parameters, events per second, model GFLOP/s (analytic count, 3x the forward
multiply-adds) against a float32 4096x4096 matmul measured in the same run, and the ratio
to the Transformer at the same length. A process whose RSS passes `--memory_limit_gib` is
stopped and marked as not fitting; where /proc cannot be read the memory watchdog is off, and
the script says so (a warning, and `watchdog` in the row). The Transformer baseline runs at its
best: its padding mask stays a [B, 1, N] key mask, never a [B, N, N] tensor.

  python benchmarks/encoder_bench.py [--lengths 512,1024,2048,4096,8192,16384]
      [--configs encoder,conv_only,attention_only,transformer] [--steps 5]
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
sys.path.insert(0, ROOT)

WIDTH, BLOCKS, FFN, HEADS, KERNEL, BLOCK_SIZE, GLOBALS = 128, 3, 256, 4, 7, 64, 4
CONFIGS = {
    "encoder": {},
    "conv_only": {"use_attention": False},
    "attention_only": {"use_conv": False},
    "transformer": {"block_type": "transformer"},
}
FEATURES = [
    {"name": "event_type", "kind": "categorical", "vocab_size": 40},
    {"name": "channel", "kind": "categorical", "vocab_size": 12},
    {"name": "amount", "kind": "numeric", "vocab_size": 37},
    {"name": "time_delta", "kind": "time", "vocab_size": 28},
    {"name": "time_hour", "kind": "time", "vocab_size": 28},
]


def forward_flops(config: str, n: int) -> float:
    """Multiply-adds x2 of the blocks' forward pass for one sequence of length n."""
    options = CONFIGS[config]
    d = WIDTH
    per_block = 2 * n * d * FFN * 2  # FFN: two dense layers
    if options.get("block_type") == "transformer":
        per_block += 2 * 4 * n * d * d + 2 * 2 * n * n * d  # projections, scores + sum
    else:
        if options.get("use_conv", True):
            per_block += 2 * n * d * KERNEL + 2 * n * d * 2 * d
        if options.get("use_attention", True):
            span = BLOCK_SIZE + GLOBALS
            per_block += 2 * 4 * n * d * d + 2 * 2 * n * span * d + 2 * 2 * GLOBALS * n * d
    return BLOCKS * per_block


def worker(config: str, length: int, batch: int, steps: int) -> dict:
    """Measures one configuration at one length (runs in a child process)."""
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    from autorisk_tf.layers import EncoderConfig, SequenceEncoder

    keras.utils.set_random_seed(0)
    encoder = SequenceEncoder(FEATURES, EncoderConfig(
        width=WIDTH, num_blocks=BLOCKS, ffn_dim=FFN, num_heads=HEADS, kernel_size=KERNEL,
        block_size=BLOCK_SIZE, num_global=GLOBALS, **CONFIGS[config]))
    head = keras.layers.Dense(FEATURES[0]["vocab_size"])
    optimizer = keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)
    ids = {s["name"]: tf.constant(rng.integers(4, s["vocab_size"], (batch, length)), tf.int32)
           for s in FEATURES}

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = encoder(ids, training=True)
            logits = head(out["sequence"])
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                ids["event_type"], logits, from_logits=True))
        weights = encoder.trainable_weights + head.trainable_weights
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    step()  # trace and warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(step())
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times),
            "params": sum(int(np.prod(w.shape)) for w in encoder.trainable_weights),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def matmul_gflops() -> float:
    """GFLOP/s of a float32 4096x4096 matmul (median of 5), the machine's ceiling."""
    import tensorflow as tf

    a = tf.random.normal((4096, 4096))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    float(matmul())
    times = []
    for _ in range(5):
        start = time.perf_counter()
        float(matmul())
        times.append(time.perf_counter() - start)
    return 2 * 4096**3 / statistics.median(times) / 1e9


def _rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc).

    Raises:
        OSError: /proc cannot be read (the caller reports the watchdog as off).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS line in /proc/{pid}/status")


def run_child(args: list[str], limit_mib: float, timeout_s: float) -> dict:
    """Runs this script as a worker, stopping it past the memory limit or the timeout."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    start, peak, watchdog = time.time(), 0.0, None
    while child.poll() is None:
        if watchdog is None:
            try:
                peak = max(peak, _rss_mib(child.pid))
            except OSError as e:
                if child.poll() is None:  # not just the child exiting between two checks
                    watchdog = f"memory watchdog off: {e}"
                    print(f"warning: {watchdog}; only the timeout applies", file=sys.stderr,
                          flush=True)
        if peak > limit_mib or time.time() - start > timeout_s:
            child.kill()
            child.wait()
            reason = "memory" if peak > limit_mib else "timeout"
            return {"error": f"stopped: {reason} (rss {peak:.0f} MiB)", "stopped": reason}
        time.sleep(0.02)
    out, err = child.communicate()
    if child.returncode:
        return {"error": err.strip().splitlines()[-1] if err.strip() else "failed",
                "stopped": "error"}
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "watchdog": watchdog} if watchdog else result


def repeated(args: list[str], limit_mib: float, timeout_s: float, repeats: int) -> dict:
    """Runs a worker `repeats` times: the median step time, its range, the largest RSS."""
    runs = []
    for _ in range(repeats):
        result = run_child(args, limit_mib, timeout_s)
        if "seconds" not in result:
            return result
        runs.append(result)
    seconds = [r["seconds"] for r in runs]
    return {**runs[0], "seconds": statistics.median(seconds), "seconds_min": min(seconds),
            "seconds_max": max(seconds), "repeats": repeats,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--repeats", type=int, default=3,
                        help="processes per row: the median step time and its range")
    parser.add_argument("--memory_limit_gib", type=float, default=20.0)
    parser.add_argument("--timeout_s", type=float, default=900.0)
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "encoder_bench.json"))
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker[0] == "matmul":
            print(json.dumps({"gflops": matmul_gflops()}))
        else:
            print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.batch,
                                    args.steps)))
        return

    limit_mib = args.memory_limit_gib * 1024
    peak = run_child(["--worker", "matmul", "0"], limit_mib, args.timeout_s)["gflops"]
    print(f"float32 4096x4096 matmul: {peak:.0f} GFLOP/s", flush=True)
    rows = []
    for length in [int(n) for n in args.lengths.split(",")]:
        for config in args.configs.split(","):
            scores_gib = args.batch * HEADS * length * length * 4 / 2**30
            if CONFIGS[config].get("block_type") == "transformer" and \
                    scores_gib > args.memory_limit_gib:
                # One [B, H, N, N] float32 score tensor alone would not fit: do not run it.
                rows.append({"config": config, "length": length, "stopped": "memory",
                             "error": f"does not fit: one score tensor is {scores_gib:.0f} GiB"})
                print(json.dumps(rows[-1]), flush=True)
                continue
            result = repeated(["--worker", config, str(length), "--batch", str(args.batch),
                               "--steps", str(args.steps)], limit_mib, args.timeout_s,
                              args.repeats)
            row = {"config": config, "length": length, **result}
            if "seconds" in result:
                flops = 3 * forward_flops(config, length) * args.batch
                row.update(events_per_s=round(args.batch * length / result["seconds"]),
                           gflops=round(flops / result["seconds"] / 1e9, 1),
                           fraction_of_matmul=round(flops / result["seconds"] / 1e9 / peak, 3))
            rows.append(row)
            print(json.dumps(row), flush=True)
    for row in rows:
        base = next((r for r in rows if r["config"] == "transformer"
                     and r["length"] == row["length"]), None)
        if base and "seconds" in row and "seconds" in base:
            row["speedup_vs_transformer"] = round(base["seconds"] / row["seconds"], 2)
            row["memory_vs_transformer"] = round(row["peak_rss_mib"] / base["peak_rss_mib"], 3)
        elif base and "seconds" in row:
            row["speedup_vs_transformer"] = f"transformer {base['stopped']}"
    for config in {r["config"] for r in rows}:
        runs = {r["length"]: r for r in rows if r["config"] == config and "seconds" in r}
        if 4096 in runs and 16384 in runs:
            for r in rows:
                if r["config"] == config and r["length"] == 16384:
                    r["time_growth_4k_to_16k"] = round(runs[16384]["seconds"]
                                                       / runs[4096]["seconds"], 2)
                    r["memory_growth_4k_to_16k"] = round(runs[16384]["peak_rss_mib"]
                                                         / runs[4096]["peak_rss_mib"], 2)
    print(markdown_table(rows))
    with open(args.json, "w") as f:
        json.dump({"machine": f"{platform.machine()} {os.cpu_count()} cpus",
                   "matmul_gflops": round(peak, 1), "batch": args.batch,
                   "model": {"width": WIDTH, "blocks": BLOCKS, "ffn": FFN, "heads": HEADS,
                             "kernel": KERNEL, "block_size": BLOCK_SIZE, "global": GLOBALS},
                   "rows": rows, "time_of_run": time.strftime("%Y-%m-%dT%H:%M:%S")},
                  f, indent=1)
    print(f"wrote {args.json}")


def markdown_table(rows: list[dict]) -> str:
    """Formats the rows as a Markdown table."""
    lines = ["| length | config | step s (median, range) | peak RSS MiB | params | events/s "
             "| GFLOP/s (% of matmul) | speed-up vs Transformer | memory vs Transformer |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['length']} | {r['config']} | {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['length']} | {r['config']} | {r['seconds']:.3f} "
            f"({r.get('seconds_min', r['seconds']):.3f}-{r.get('seconds_max', r['seconds']):.3f})"
            f" | {r['peak_rss_mib']:.0f} | "
            f"{r['params']:,} | {r['events_per_s']:,} | {r['gflops']} "
            f"({100 * r['fraction_of_matmul']:.0f}%) | {r.get('speedup_vs_transformer', '')} | "
            f"{r.get('memory_vs_transformer', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
