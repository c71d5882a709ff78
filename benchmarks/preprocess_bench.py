"""End-to-end preprocessing benchmark: simulated events -> TFRecords + artifacts.

Runs `beam.preprocess` with its local defaults (for inputs this size: one worker process per
core) on 1M and 4M simulated events, each run in its own process, and reports the pipeline's
wall time (`seconds`: `preprocess.run` alone, timed inside the process) next to the whole
process's (`process_seconds`: interpreter start and imports too, which would flatter the
4M/1M ratio), events per second and peak RSS (the largest of the job's processes). The
yardstick, measured in the same invocation, is a plain single-process read and parse of the
same files (`csv` reader and the job's own `RowParser`, nothing else): `vs_read_parse` is the
pipeline's time over it. The 4M run is compared with the 1M run (time ratio <= 4.4, memory
not growing with the input beyond the longest history).

Machine speed varies up to 4x from day to day, so a speed-up is measured against an older
checkout in the same invocation: `--baseline DIR` runs that checkout's job on the same data
(`vs_baseline`: its time over ours). The target of 100k events/s at 1M events was set when
commit cc3308e ran 63k events/s: `vs_baseline` >= 1.59 against a worktree of cc3308e.

  python benchmarks/preprocess_bench.py [--sizes 1000000,4000000] [--work_dir bench_out] \
      [--baseline /tmp/cc3308e]
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHILD = """
import json, resource, sys, time
from beam import preprocess
start = time.time()
stats = preprocess.run(sys.argv[1:])
peak = max(resource.getrusage(who).ru_maxrss
           for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"seconds": time.time() - start, "stats": stats, "peak_rss_mib": peak / 1024}))
"""


def _simulate(work_dir: str, events: int) -> str:
    from autorisk_tf import simulate

    path = os.path.join(work_dir, f"sim_{events}")
    marker = os.path.join(path, "summary.json")
    if not os.path.exists(marker):
        start = time.time()
        summary = simulate.write_dataset(path, seed=1, num_events=events,
                                         num_shards=max(4, events // 250_000))
        summary["seconds"] = time.time() - start
        with open(marker, "w") as f:
            json.dump(summary, f)
    with open(marker) as f:
        print(f"data: {path} {json.load(f)}", flush=True)
    return path


def read_parse_seconds(data: str) -> float:
    """The yardstick: one process reads every CSV row and parses it with `RowParser`."""
    import csv
    import glob

    from autorisk_tf.data import events
    from autorisk_tf.data.schema import load_schema

    parser = events.RowParser(load_schema(os.path.join(ROOT,
                                                       "autorisk_tf/schemas/simulated.yaml")))
    start = time.time()
    for path in sorted(glob.glob(f"{data}/events/*.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                try:
                    parser.parse(row)
                except events.RejectedRow:
                    pass
    return time.time() - start


def _preprocess(data: str, out: str, checkout: str = ROOT) -> dict:
    """Runs the job of a checkout (this one, or `--baseline` for an older one) on `data`."""
    args = ["--input", f"{data}/events/*.csv", "--schema",
            os.path.join(checkout, "autorisk_tf/schemas/simulated.yaml"),
            "--labels", f"{data}/labels.csv", "--output_dir", out]
    if os.path.exists(out):  # an older checkout (--baseline) may not know --overwrite
        shutil.rmtree(out)
    start = time.time()
    result = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True,
                            text=True, cwd=checkout,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode:
        sys.exit(f"preprocess failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.time() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,4000000")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "bench_out"))
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks",
                                                       "preprocess_bench.json"))
    parser.add_argument("--baseline", default=None,
                        help="Another checkout of this repository (such as a git worktree of "
                             "an older commit): its job runs on the same data in the same "
                             "invocation, and `vs_baseline` is its time over ours.")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        data = _simulate(args.work_dir, size)
        report = _preprocess(data, os.path.join(args.work_dir, f"out_{size}"))
        stats = report["stats"]
        assert stats["reconciled"]
        yardstick = read_parse_seconds(data)
        baseline = {}
        if args.baseline:
            old = _preprocess(data, os.path.join(args.work_dir, f"baseline_{size}"),
                              os.path.abspath(args.baseline))
            baseline = {"baseline_seconds": round(old["seconds"], 2),
                        "vs_baseline": round(old["seconds"] / report["seconds"], 2)}
        rows.append({**baseline, "target_events": size, "events": stats["rows_in"],
                     "users": stats["users"], "longest_history": stats["history_length"]["max"],
                     "seconds": round(report["seconds"], 2),
                     "process_seconds": round(report["process_seconds"], 2),
                     "events_per_s": round(stats["rows_in"] / report["seconds"]),
                     "read_parse_seconds": round(yardstick, 2),
                     "vs_read_parse": round(report["seconds"] / yardstick, 2),
                     "peak_rss_mib": round(report["peak_rss_mib"]),
                     "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    base = rows[0]
    for row in rows:
        row["time_ratio"] = round(row["seconds"] / base["seconds"], 2)
        row["size_ratio"] = round(row["events"] / base["events"], 2)
        row["rss_ratio"] = round(row["peak_rss_mib"] / base["peak_rss_mib"], 2)
    header = ("events", "users", "longest_history", "seconds", "process_seconds",
              "events_per_s", "vs_read_parse", "peak_rss_mib", "size_ratio", "time_ratio",
              "rss_ratio") + (("baseline_seconds", "vs_baseline") if args.baseline else ())
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    with open(args.json, "w") as f:
        json.dump({"machine": f"{platform.machine()} {os.cpu_count()} cpus",
                   "python": platform.python_version(), "baseline": args.baseline and {
                       "path": args.baseline, "commit": subprocess.run(
                           ["git", "-C", args.baseline, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True).stdout.strip()},
                   "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
