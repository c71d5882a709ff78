"""Op-level CPU profile of one encoder-benchmark train step.

Builds the `encoder_bench.py` model (a configuration and a length), runs two warm-up steps,
records two steps with the TensorFlow profiler and prints where the time goes: milliseconds
per step summed over the executor's threads, by op type and by layer scope (block indices
folded together), from the profiler's own trace file (no TensorBoard needed).

  python benchmarks/profile_step.py [--config encoder] [--length 4096] [--top 30]
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

STEPS = 2


def op_times(logdir: str) -> collections.Counter:
    """Milliseconds per step by TensorFlow op name ("scope/op:Type") from an xplane trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Ops are "scope/name:Type"; executor and function events ("Executor::...",
                # "EagerLocalExecute: ...") are not ops.
                if ":" in name and "::" not in name and not name.startswith("EagerLocal"):
                    times[name] += event.duration_ps / 1e9 / STEPS
    return times


def main() -> None:
    import encoder_bench
    import keras
    import numpy as np
    import tensorflow as tf

    from autorisk_tf.layers import EncoderConfig, SequenceEncoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="encoder", choices=list(encoder_bench.CONFIGS))
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    b = encoder_bench
    keras.utils.set_random_seed(0)
    encoder = SequenceEncoder(b.FEATURES, EncoderConfig(
        width=b.WIDTH, num_blocks=b.BLOCKS, ffn_dim=b.FFN, num_heads=b.HEADS,
        kernel_size=b.KERNEL, block_size=b.BLOCK_SIZE, num_global=b.GLOBALS,
        **b.CONFIGS[args.config]))
    head = keras.layers.Dense(b.FEATURES[0]["vocab_size"])
    optimizer = keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)
    ids = {s["name"]: tf.constant(rng.integers(4, s["vocab_size"], (args.batch, args.length)),
                                  tf.int32) for s in b.FEATURES}

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = head(encoder(ids, training=True)["sequence"])
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                ids["event_type"], logits, from_logits=True))
        weights = encoder.trainable_weights + head.trainable_weights
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    for _ in range(2):
        float(step())
    logdir = tempfile.mkdtemp(prefix="profile_step_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(STEPS):
        float(step())
    seconds = (time.perf_counter() - start) / STEPS
    tf.profiler.experimental.stop()

    times = op_times(logdir)
    by_type, by_scope = collections.Counter(), collections.Counter()
    for name, ms in times.items():
        scope, op_type = name.rsplit(":", 1)
        by_type[op_type] += ms
        scope = re.sub(r"block_\d+(_\d+)?", "block", scope)
        scope = "/".join(re.sub(r"_\d+$", "", part) for part in scope.split("/")[:4])
        by_scope[f"{scope} ({op_type})"] += ms
    print(f"{args.config} N={args.length} batch {args.batch}: {seconds:.3f} s a step (wall, "
          f"while profiling); op time summed over threads: {sum(times.values()):.0f} ms")
    for title, counter in (("op type", by_type), ("scope (op type)", by_scope)):
        print(f"\n| ms per step | {title} |\n|---:|---|")
        for key, ms in counter.most_common(args.top):
            print(f"| {ms:.1f} | {key} |")


if __name__ == "__main__":
    main()
