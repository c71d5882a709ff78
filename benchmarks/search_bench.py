"""Similar-user search benchmark: ring recall of the embeddings, and the index against exact search.

1. Rings: simulate users with planted fraud rings (`--num_rings` of `--ring_size` accounts
   run from one script), preprocess with the simulated schema plus the item name as a
   category (`ITEM_NAME`: which items a user buys, as real logs' item ids give it),
   pre-train `--config` (default `real_search.yaml`, the config for real logs set for
   similar-user search: one bag decoder for every part; or use `--model_dir`), embed
   every user, and report ring recall@20 (from each ring member, the share of its ring among
   its 20 nearest users) for our embeddings (every part alike, as the index's `part_cosine`
   compares them, and plain cosine), the bag-of-event-counts embedding and random vectors.
2. Real embeddings: Online Retail's customers (`../shared/data/online-retail`), embedded
   by `configs/real.yaml` pre-trained on them (or `--retail_model_dir`): recall@10 of the
   HNSW index against exact search on the same vectors, with both metrics.
3. Index: synthetic clustered vectors of the embedding's width at each `--sizes` count:
   build time and size of the flat and HNSW indexes, query p50/p99 (one user per query) of
   exact NumPy search (the yardstick, measured in the same run), faiss flat and HNSW, and
   recall@10 against exact search. Speed is the ratio exact p50 / index p50.

  python benchmarks/search_bench.py [--sizes 100000,1000000] [--skip_rings] [--skip_retail]
      [--json benchmarks/search_bench.json]

`--sizes ""` and the `--skip_` flags keep those parts of the last JSON, marked with the
commit they were measured at.
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
REAL = os.path.join(ROOT, "autorisk_tf", "configs", "real.yaml")
RINGS_CONFIG = os.path.join(ROOT, "autorisk_tf", "configs", "real_search.yaml")
# The field added to the simulated schema for the rings: item names as ids, beside the text.
ITEM_NAME = ("  - {name: item_name, column: item, kind: categorical, max_vocab: 4000, "
             "min_count: 2}\n")


def ring_recalls(work: str, users: int, rings: int, size: int, model_dir: str | None,
                 config: str = RINGS_CONFIG, seed: int = 5) -> dict:
    """Ring recall@20 of our embeddings, the bag of event counts and random vectors."""
    from autorisk_tf import simulate
    from autorisk_tf.data import reader
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.data.fingerprint import embedding_parts
    from autorisk_tf.embed import embed, load_embedder
    from autorisk_tf.evaluate import bag_of_events
    from autorisk_tf.neighbours import balance_parts, ring_recall
    from autorisk_tf.training import Pretrainer, load_config
    from beam import preprocess as job

    simulate.write_dataset(f"{work}/raw", seed=seed, num_users=users, num_shards=2,
                           num_rings=rings, ring_size=size)
    with open(SCHEMA, encoding="utf-8") as f:
        text = f.read()
    fields_end = text.index("time_features:")
    with open(f"{work}/schema.yaml", "w", encoding="utf-8") as f:
        f.write(text[:fields_end] + ITEM_NAME + text[fields_end:])
    job.run(["--input", f"{work}/raw/events/*.csv", "--schema", f"{work}/schema.yaml",
             "--labels",
             f"{work}/raw/labels.csv", "--output_dir", f"{work}/out", "--max_len", "256",
             "--split", "1,0,0"])
    artifacts = Artifacts.load(f"{work}/out/artifacts")
    pattern = f"{work}/out/train/*.tfrecord"
    seconds, made_by = 0.0, model_dir or os.path.relpath(config, ROOT)
    if model_dir is None:
        model_dir, started = f"{work}/run", time.time()
        Pretrainer(artifacts, load_config(config), model_dir).fit(pattern, verbose=0)
        seconds = time.time() - started
    embedder = load_embedder(model_dir)
    keys, x, _ = embed(embedder, pattern, artifacts.schema)
    with open(f"{work}/raw/rings.csv", encoding="utf-8") as f:
        members = {row["user_id"]: int(row["ring"]) for row in csv.DictReader(f)}
    bag_keys, bag = bag_of_events(list(reader.read_sequences(pattern, artifacts.schema)),
                                  artifacts.schema)
    random = np.random.default_rng(0).normal(size=x.shape)
    return {"users": len(keys), "rings": rings, "ring_size": size, "k": 20,
            "config": made_by,
            "pretrain_seconds": round(seconds, 1), "embedding_width": int(x.shape[1]),
            "ours": ring_recall(balance_parts(x, [w for _, w in embedding_parts(embedder)]),
                                list(keys), members),
            "ours_plain_cosine": ring_recall(x, list(keys), members),
            "bag_of_event_counts": ring_recall(bag, list(bag_keys), members),
            "random": ring_recall(random, list(keys), members)}


def retail_recall(work: str, data_root: str, model_dir: str | None, queries: int = 500
                  ) -> dict:
    """HNSW recall@10 against exact search on real embeddings of Online Retail customers."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from real_data_bench import SCHEMAS, TASKS, build_task_tables

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.data.fingerprint import embedding_parts
    from autorisk_tf.embed import embed, load_embedder
    from autorisk_tf.search import UserIndex
    from autorisk_tf.training import Pretrainer, load_config
    from beam import preprocess as job

    spec = TASKS["country_non_uk"]
    build_task_tables("country_non_uk", data_root, work)
    job.run(["--input", os.path.join(work, spec["events"]), "--schema",
             os.path.join(SCHEMAS, spec["schema"]), "--output_dir", f"{work}/data",
             "--max_len", "512", "--split", "1,0,0"])
    pattern = f"{work}/data/train/*.tfrecord"
    if model_dir is None:
        model_dir = f"{work}/run"
        Pretrainer(Artifacts.load(f"{work}/data/artifacts"),
                   load_config(REAL),
                   model_dir).fit(pattern, verbose=0)
    embedder = load_embedder(model_dir)
    keys, x, _ = embed(embedder, pattern, Artifacts.load(f"{work}/data/artifacts").schema)
    keys, parts = [str(k) for k in keys], embedding_parts(embedder)
    probe = np.random.default_rng(0).choice(len(keys), min(queries, len(keys)), replace=False)
    row = {"customers": len(keys), "dim": int(x.shape[1]), "queries": len(probe)}
    for metric in ("cosine", "part_cosine"):
        exact = UserIndex.build(keys, x, metric=metric, kind="flat", parts=parts)
        approximate = UserIndex.build(keys, x, metric=metric, kind="hnsw", parts=parts)
        truth, _ = exact.search(x[probe], 10)
        found, _ = approximate.search(x[probe], 10)
        row[metric] = {"hnsw_recall_at_10": float(np.mean(
            [len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))}
    return row


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
    parser.add_argument("--dim", type=int, default=272, help="Width of the synthetic vectors.")
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--num_rings", type=int, default=10)
    parser.add_argument("--ring_size", type=int, default=5)
    parser.add_argument("--model_dir", default=None, help="Embed with this run instead of "
                        "pre-training --config on the simulated users.")
    parser.add_argument("--config", default=RINGS_CONFIG,
                        help="Pre-training config of the rings.")
    parser.add_argument("--compare_config", action="append", default=None,
                        help="Another config whose ring recall the same run reports (under "
                        "`rings_compared`); repeatable. Defaults to real.yaml alone.")
    parser.add_argument("--skip_rings", action="store_true")
    parser.add_argument("--skip_retail", action="store_true")
    parser.add_argument("--retail_model_dir", default=None, help="Embed Online Retail with "
                        "this run (pre-trained on it) instead of pre-training real.yaml.")
    parser.add_argument("--data_root", default=os.path.join(ROOT, "..", "shared", "data"))
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
    last = {}
    if os.path.exists(args.json):  # keep the parts skipped from the last run
        with open(args.json, encoding="utf-8") as f:
            last = json.load(f)
    for part, skipped in (("rings", args.skip_rings), ("rings_compared", args.skip_rings),
                          ("retail", args.skip_retail)):
        if skipped and last.get(part):
            result[part] = {**last[part], "measured_at_commit": last[part].get(
                "measured_at_commit", last.get("commit", "an earlier run"))}
    if not args.sizes and last.get("index"):  # `--sizes ""`: keep the last index rows
        result["index"] = [{**row, "measured_at_commit": row.get(
            "measured_at_commit", last.get("commit", "an earlier run"))}
            for row in last["index"]]
    if not args.skip_rings:
        with tempfile.TemporaryDirectory() as work:
            result["rings"] = ring_recalls(work, args.users, args.num_rings, args.ring_size,
                                           args.model_dir, args.config)
        if args.model_dir is None:
            result["rings_compared"] = []
            for config in args.compare_config or [REAL]:
                with tempfile.TemporaryDirectory() as work:
                    result["rings_compared"].append(ring_recalls(
                        work, args.users, args.num_rings, args.ring_size, None, config))
        for r in [result["rings"], *result.get("rings_compared", [])]:
            print(f"ring recall@20 ({r['rings']} rings of {r['ring_size']} among {r['users']} "
                  f"users, {r['config']}): ours {r['ours']:.3f} (plain cosine "
                  f"{r['ours_plain_cosine']:.3f}), bag of event counts "
                  f"{r['bag_of_event_counts']:.3f}, random {r['random']:.3f}")
    if not args.skip_retail:
        with tempfile.TemporaryDirectory() as work:
            result["retail"] = retail_recall(work, args.data_root, args.retail_model_dir)
        r = result["retail"]
        print(f"Online Retail ({r['customers']} customers, width {r['dim']}): HNSW recall@10 "
              f"{r['cosine']['hnsw_recall_at_10']:.3f} (cosine), "
              f"{r['part_cosine']['hnsw_recall_at_10']:.3f} (part_cosine)")
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
