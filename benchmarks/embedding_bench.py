"""Embedding lookup benchmark: one-hot matmul vs gather, by table size.

`FieldEmbedding` reads tables of up to `ONE_HOT_MAX_VOCAB` rows with a one-hot matmul and
larger ones with a gather. This script times both ways for one field on a batch of 8 x 4,096
ids at width 128: forward, a sum-of-squares loss, backward and an Adam update (the optimizer
densifies a gather's sparse gradient), median of 7 steps after a warm-up, both in the same
process. The ratio is gather time over one-hot time (above 1: one-hot is faster).

  python benchmarks/embedding_bench.py [--vocab_sizes 16,64,128,256,512,1024] [--width 128]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def step_seconds(vocab_size: int, width: int, one_hot: bool, steps: int = 7) -> float:
    """Median seconds of one lookup + backward + Adam step."""
    import keras
    import tensorflow as tf
    from keras import ops

    keras.utils.set_random_seed(0)
    ids = tf.random.uniform((8, 4096), 0, vocab_size, tf.int32)
    table = keras.layers.Embedding(vocab_size, width)
    table.build(None)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            if one_hot:
                vectors = ops.matmul(ops.one_hot(ids, vocab_size), table.embeddings)
            else:
                vectors = table(ids)
            loss = tf.reduce_sum(tf.square(vectors))
        optimizer.apply_gradients(zip(tape.gradient(loss, table.trainable_weights),
                                      table.trainable_weights, strict=True))
        return loss

    float(step())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(step())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from autorisk_tf.layers.field_embedding import ONE_HOT_MAX_VOCAB

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab_sizes", default="16,64,128,256,512,1024")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks",
                                                       "embedding_bench.json"))
    args = parser.parse_args()
    rows = []
    for vocab_size in [int(v) for v in args.vocab_sizes.split(",")]:
        gather = step_seconds(vocab_size, args.width, one_hot=False)
        one_hot = step_seconds(vocab_size, args.width, one_hot=True)
        rows.append({"vocab_size": vocab_size, "gather_ms": round(1000 * gather, 2),
                     "one_hot_ms": round(1000 * one_hot, 2),
                     "gather_over_one_hot": round(gather / one_hot, 2),
                     "used": "one-hot" if vocab_size <= ONE_HOT_MAX_VOCAB else "gather"})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| rows | gather ms | one-hot ms | gather / one-hot | FieldEmbedding uses |",
             "|---:|---:|---:|---:|---|"]
    lines += [f"| {r['vocab_size']} | {r['gather_ms']} | {r['one_hot_ms']} | "
              f"{r['gather_over_one_hot']} | {r['used']} |" for r in rows]
    print("\n".join(lines))
    with open(args.json, "w") as f:
        json.dump({"machine": f"{platform.machine()} {os.cpu_count()} cpus",
                   "width": args.width, "ids": [8, 4096], "rows": rows,
                   "time_of_run": time.strftime("%Y-%m-%dT%H:%M:%S")}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
