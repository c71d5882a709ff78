r"""Similar-user search on embeddings: build an index, query it, add and remove users.

  python -m autorisk_tf.search build --embeddings 'emb/*.parquet' --output index/ \
      [--metric auto|cosine|part_cosine|l2] [--kind auto|flat|hnsw|ivfpq] [--overwrite]
  python -m autorisk_tf.search query --index index/ --key u00000042 [--k 20] [--data out/]
  python -m autorisk_tf.search query --index index/ --events user.csv \
      --model models/autorisk/1 [--k 20]
  python -m autorisk_tf.search add --index index/ --embeddings 'new/*.parquet'
  python -m autorisk_tf.search remove --index index/ --keys u1,u2

`--embeddings` reads what `autorisk_tf.embed` and `beam.embed` write. `add` replaces the
vector of a key already held (a user embedded again). `query --events` embeds raw event rows
(CSV or JSON Lines, the columns of the schema) with the SavedModel first; the index refuses
a SavedModel of another model than the one its vectors came from.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

import numpy as np

from autorisk_tf.data import fileio
from autorisk_tf.search.embeddings import read_embeddings
from autorisk_tf.search.index import KINDS, METRICS, SearchError, UserIndex


def build(embeddings: str, output: str, metric: str = "auto", kind: str = "auto",
          overwrite: bool = False) -> UserIndex:
    """Builds an index of embedding files and saves it to `output`."""
    keys, vectors, model, parts = read_embeddings(embeddings)
    index = UserIndex.build(keys, vectors, metric=metric, kind=kind, model=model, parts=parts)
    index.save(output, overwrite=overwrite, sources=[embeddings])
    return index


def check_model(index: UserIndex, model: str, what: str) -> None:
    """Refuses vectors of another model than the index's (when both are known).

    Raises:
        SearchError: the fingerprints differ.
    """
    if index.model and model and model != index.model:
        raise SearchError(f"{what} comes from model {model}, the index from model "
                          f"{index.model}: rebuild the index or use that model")


def embed_event_rows(rows: list[dict], version_dir: str) -> tuple[list[str], np.ndarray]:
    """Embeds raw event rows with a SavedModel's `serving_default`, one vector per user."""
    import tensorflow as tf

    from autorisk_tf.contract import SCHEMA_ASSET, SERVING_DEFAULT
    from autorisk_tf.data.instances import instances_from_rows, to_columns
    from autorisk_tf.data.schema import load_schema

    schema = load_schema(fileio.join(version_dir, SCHEMA_ASSET))
    keys, instances = instances_from_rows(rows, schema)
    model = tf.saved_model.load(version_dir)
    outputs = model.signatures[SERVING_DEFAULT](
        **{name: tf.constant(value) for name, value in to_columns(instances).items()})
    return keys, outputs["embedding"].numpy()


def read_rows(path: str) -> list[dict]:
    """Raw event rows of a CSV file or a JSON Lines file (`.jsonl`, `.json`)."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith((".jsonl", ".json")):
            return [json.loads(line) for line in f if line.strip()]
        return list(csv.DictReader(f))


def event_summaries(data: str, keys: set[str]) -> dict[str, str]:
    """One line per key found in a `beam.preprocess` output: events, dates, top values."""
    from collections import Counter

    from autorisk_tf.contract import SPLITS
    from autorisk_tf.data import reader
    from autorisk_tf.data import sequence_example as seqex
    from autorisk_tf.data.artifacts import Artifacts

    schema = Artifacts.load(fileio.join(data, "artifacts")).schema
    categorical = [f.name for f in schema.fields if f.kind == "categorical"][:2]
    found = {}
    for split in SPLITS:
        try:
            pattern = fileio.split_pattern(data, split)
        except fileio.EmptySplitError:
            continue
        for ex in reader.read_sequences(pattern, schema):
            if ex[seqex.KEY] not in keys:
                continue
            times = np.asarray(ex["time/timestamp_ms"]).astype("datetime64[ms]")
            parts = [f"{int(ex[seqex.LENGTH])} events",
                     f"{str(times[0])[:10]}..{str(times[-1])[:10]}"]
            for name in categorical:
                top = Counter(ex[f"event/{name}"]).most_common(2)
                parts.append(f"{name}: " + ", ".join(f"{v or '-'} {n}" for v, n in top))
            found[ex[seqex.KEY]] = "; ".join(parts)
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autorisk_tf.search", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="Build an index of embedding files.")
    make.add_argument("--embeddings", required=True,
                      help="Parquet files of autorisk_tf.embed or beam.embed (glob, or "
                           "several comma-separated).")
    make.add_argument("--output", required=True, help="Index folder.")
    make.add_argument("--metric", choices=METRICS, default="auto",
                      help="auto: part_cosine (every part of the embedding weighs alike) when "
                      "the files name their parts, else cosine.")
    make.add_argument("--kind", choices=KINDS, default="auto",
                      help="auto: flat below 100k users, hnsw below 10M, ivfpq beyond.")
    make.add_argument("--overwrite", action="store_true", help="Replace an index there.")
    query = commands.add_parser("query", help="The nearest users of a user.")
    query.add_argument("--index", required=True, help="Index folder.")
    query.add_argument("--key", help="A user in the index.")
    query.add_argument("--events", help="Raw event rows (CSV or JSON Lines) of the users "
                                        "to query, embedded with --model first.")
    query.add_argument("--model", help="SavedModel version folder for --events.")
    query.add_argument("--k", type=int, default=20, help="Neighbours per query.")
    query.add_argument("--data", help="beam.preprocess output: add each neighbour's events.")
    query.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    add = commands.add_parser("add", help="Add users, or replace the vectors of held ones.")
    add.add_argument("--index", required=True)
    add.add_argument("--embeddings", required=True)
    remove = commands.add_parser("remove", help="Remove users.")
    remove.add_argument("--index", required=True)
    remove.add_argument("--keys", required=True, help="Comma-separated keys.")
    return parser


def _query(args) -> list[dict]:
    index = UserIndex.load(args.index)
    if bool(args.key) == bool(args.events):
        raise SearchError("give --key or --events (with --model)")
    if args.key:
        results = [{"query": args.key, "neighbours": index.neighbours(args.key, args.k)}]
    else:
        if not args.model:
            raise SearchError("--events needs --model (a SavedModel version folder)")
        from autorisk_tf.data.fingerprint import saved_model_fingerprint

        check_model(index, saved_model_fingerprint(args.model), f"--model {args.model}")
        keys, vectors = embed_event_rows(read_rows(args.events), args.model)
        found, scores = index.search(vectors, args.k)
        results = [{"query": key, "neighbours": [(str(n), float(s)) for n, s in
                                                 zip(found[i], scores[i], strict=True)
                                                 if n is not None]}
                   for i, key in enumerate(keys)]
    if args.data:
        summaries = event_summaries(args.data, {n for r in results for n, _ in r["neighbours"]})
        for result in results:
            result["events"] = {n: summaries.get(n, "") for n, _ in result["neighbours"]}
    return results


def main(argv=None) -> int:
    """Command-line entry point; one line on errors (exit code 2)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            index = build(args.embeddings, args.output, args.metric, args.kind, args.overwrite)
            print(f"indexed {len(index)} users ({index.kind}, {index.metric}, width "
                  f"{index.dim}, model {index.model or 'unknown'}) into {args.output}")
        elif args.command == "query":
            results = _query(args)
            if args.json:
                print(json.dumps(results, indent=1))
            for result in [] if args.json else results:
                print(f"nearest users of {result['query']}:")
                for rank, (key, score) in enumerate(result["neighbours"], 1):
                    events = result.get("events", {}).get(key, "")
                    print(f"  {rank:>3}. {key:<20} {score:+.4f}  {events}".rstrip())
        else:
            index = UserIndex.load(args.index)
            if args.command == "add":
                keys, vectors, model, _ = read_embeddings(args.embeddings)
                check_model(index, model, args.embeddings)
                replaced = sum(key in index for key in keys)
                index.add(keys, vectors)
                print(f"added {len(keys) - replaced} users, replaced {replaced}")
            else:
                removed = index.remove([k for k in args.keys.split(",") if k])
                print(f"removed {removed} users")
            index.save(args.index, overwrite=True, sources=index.sources)
            print(f"{len(index)} users in {args.index}")
    except (ValueError, OSError) as e:  # SearchError and OutputFolderError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
