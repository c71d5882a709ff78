"""Similar-user search benchmark: ring recall of the embeddings, and the index against exact search.

1. Rings: simulate users with planted fraud rings (`--num_rings` of `--ring_size` accounts
   run from one script), preprocess, pre-train `small.yaml` (or use `--model_dir`), embed
   every user, and report ring recall@20 (from each ring member, the share of its ring among
   its 20 nearest users) for our embeddings, the bag-of-event-counts embedding and random
   vectors.
2. Index: synthetic clustered vectors of the embedding's width at each `--sizes` count:
   build time and size of the flat and HNSW indexes, query p50/p99 (one user per query) of
   exact NumPy search (the yardstick, measured in the same run), faiss flat and HNSW, and
   recall@10 against exact search. Speed is the ratio exact p50 / index p50.

  python benchmarks/search_bench.py [--sizes 100000,1000000] [--skip_rings]
      [--json benchmarks/search_bench.json]
"""

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SCHEMA = os.path.join(ROOT, "autorisk_tf", "schemas", "simulated.yaml")
SMALL = os.path.join(ROOT, "autorisk_tf", "configs", "small.yaml")


def ring_recalls(work: str, users: int, rings: int, size: int, model_dir: str | None,
                 seed: int = 5) -> dict:
    """Ring recall@20 of our embeddings, the bag of event counts and random vectors."""
    from autorisk_tf import simulate
    from autorisk_tf.data import reader
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.embed import embed, load_embedder
    from autorisk_tf.evaluate import bag_of_events
    from autorisk_tf.neighbours import ring_recall
    from autorisk_tf.training import Pretrainer, load_config
    from beam import preprocess as job

    simulate.write_dataset(f"{work}/raw", seed=seed, num_users=users, num_shards=2,
                           num_rings=rings, ring_size=size)
    job.run(["--input", f"{work}/raw/events/*.csv", "--schema", SCHEMA, "--labels",
             f"{work}/raw/labels.csv", "--output_dir", f"{work}/out", "--max_len", "256",
             "--split", "1,0,0"])
    artifacts = Artifacts.load(f"{work}/out/artifacts")
    pattern = f"{work}/out/train/*.tfrecord"
    seconds = 0.0
    if model_dir is None:
        model_dir, started = f"{work}/run", time.time()
        Pretrainer(artifacts, load_config(SMALL), model_dir).fit(pattern, verbose=0)
        seconds = time.time() - started
    keys, x, _ = embed(load_embedder(model_dir), pattern, artifacts.schema)
    with open(f"{work}/raw/rings.csv", encoding="utf-8") as f:
        members = {row["user_id"]: int(row["ring"]) for row in csv.DictReader(f)}
    bag_keys, bag = bag_of_events(list(reader.read_sequences(pattern, artifacts.schema)),
                                  artifacts.schema)
    random = np.random.default_rng(0).normal(size=x.shape)
    return {"users": len(keys), "rings": rings, "ring_size": size, "k": 20,
            "pretrain_seconds": round(seconds, 1), "embedding_width": int(x.shape[1]),
            "ours": ring_recall(x, list(keys), members),
            "bag_of_event_counts": ring_recall(bag, list(bag_keys), members),
            "random": ring_recall(random, list(keys), members)}


def _latencies(search, queries) -> tuple[float, float]:
    times = []
    for query in queries:
        started = time.perf_counter()
        search(query[None, :])
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def index_row(count: int, dim: int, queries: int = 200, seed: int = 0) -> dict:
    """Exact NumPy vs flat vs HNSW at one size (run in its own process for its memory)."""
    import faiss

    from autorisk_tf.search import UserIndex

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(count // 200, 10), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), count)] + 0.5 * rng.normal(
        size=(count, dim)).astype(np.float32)
    keys = [f"u{i}" for i in range(count)]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    probe = unit[rng.choice(count, queries, replace=False)]

    def exact(query):
        scores = unit @ query[0]
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    exact_p50, exact_p99 = _latencies(exact, probe)
    truth = [set(exact(q[None, :]).tolist()) for q in probe]
    row = {"count": count, "dim": dim, "queries": queries,
           "exact_p50_ms": exact_p50 * 1e3, "exact_p99_ms": exact_p99 * 1e3}
    for kind in ("flat", "hnsw"):
        started = time.time()
        index = UserIndex.build(keys, x, kind=kind)
        build = time.time() - started
        size = len(faiss.serialize_index(index._index)) / 2**20
        p50, p99 = _latencies(lambda q, i=index: i.search(q, 10), probe)
        found, _ = index.search(probe, 10)
        recall = np.mean([len({int(k[1:]) for k in f} & t) / 10
                          for f, t in zip(found, truth, strict=True)])
        row[kind] = {"build_seconds": build, "index_mib": size,
                     "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "recall_at_10": recall,
                     "speedup_p50": exact_p50 / p50}
        del index
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=272, help="Embedding width (small.yaml's).")
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--num_rings", type=int, default=10)
    parser.add_argument("--ring_size", type=int, default=5)
    parser.add_argument("--model_dir", default=None, help="Embed with this run instead of "
                        "pre-training small.yaml on the simulated users.")
    parser.add_argument("--skip_rings", action="store_true")
    parser.add_argument("--one_size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks",
                                                       "search_bench.json"))
    args = parser.parse_args()
    if args.one_size:  # a child process: one size, its own peak memory
        print(json.dumps(index_row(args.one_size, args.dim)))
        return
    result = {"date": datetime.date.today().isoformat(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "commit": subprocess.run(
                  ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                  cwd=ROOT).stdout.strip(), "index": []}
    if args.skip_rings and os.path.exists(args.json):  # keep the rings of the last run
        with open(args.json, encoding="utf-8") as f:
            kept = json.load(f).get("rings")
        if kept:
            result["rings"] = {**kept, "measured_at_commit": kept.get(
                "measured_at_commit", "an earlier run")}
    if not args.skip_rings:
        with tempfile.TemporaryDirectory() as work:
            result["rings"] = ring_recalls(work, args.users, args.num_rings, args.ring_size,
                                           args.model_dir)
        r = result["rings"]
        print(f"ring recall@20 ({r['rings']} rings of {r['ring_size']} among {r['users']} "
              f"users): ours {r['ours']:.3f}, bag of event counts "
              f"{r['bag_of_event_counts']:.3f}, random {r['random']:.3f}")
    print(f"{'users':>9} {'kind':>5} {'build s':>8} {'MiB':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'recall@10':>9} {'x exact':>8}")
    for size in (int(s) for s in args.sizes.split(",") if s):
        out = subprocess.run([sys.executable, __file__, "--one_size", str(size), "--dim",
                              str(args.dim)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        result["index"].append(row)
        print(f"{size:>9} {'exact':>5} {'':>8} {'':>8} {row['exact_p50_ms']:>8.2f} "
              f"{row['exact_p99_ms']:>8.2f} {1.0:>9.3f} {1.0:>8.1f}")
        for kind in ("flat", "hnsw"):
            k = row[kind]
            print(f"{size:>9} {kind:>5} {k['build_seconds']:>8.1f} "
                  f"{k['index_mib']:>8.0f} {k['p50_ms']:>8.2f} {k['p99_ms']:>8.2f} "
                  f"{k['recall_at_10']:>9.3f} {k['speedup_p50']:>8.1f}")
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
