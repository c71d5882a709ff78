"""End-to-end scale benchmark: 1M and 10M simulated events through every stage.

  python benchmarks/scale_bench.py [--sizes 1000000,10000000] [--steps 200]
      [--work bench_out/scale]

For each size, simulates the events (about 50 a user: `--max_events` 100 caps a history, so
10M events are about 200k users; kept in `--work` and reused), then runs each stage as its
own process, as a user would: `beam.preprocess` (local runner, its defaults), pre-training
(`autorisk_tf.train`, `configs/small.yaml`, `--steps` steps), `export.savedmodel`, and
`beam.embed` of every user. Each stage reports its wall time (the whole process, imports
included), peak RSS (the largest of the process and its workers) and throughput; every
figure of a larger size also comes as a ratio to the smallest size's run in the same
invocation, so the machine's speed on the day cancels out. Targets for 10x the events: time
<= 11x and peak RSS <= 2x for the stages that read every event (preprocess, embed; the
pre-training runs a fixed number of steps). Prints a table and writes
`benchmarks/scale_bench.json`.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
JSON = os.path.join(HERE, "scale_bench.json")
SCHEMA = os.path.join(ROOT, "autorisk_tf", "schemas", "simulated.yaml")
SMALL = os.path.join(ROOT, "autorisk_tf", "configs", "small.yaml")
TIME_RATIO, RSS_RATIO = 1.1, 2.0  # per 1x more events: time <= 1.1x the size ratio
SCALED = ("preprocess", "embed")  # the stages whose work grows with the events
# Runs one `python -m` entry point and writes its peak RSS (with its workers') as JSON.
_CHILD = """
import json, resource, runpy, sys
module, report = sys.argv[1], sys.argv[2]
sys.argv = [module] + sys.argv[3:]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
peak = max(resource.getrusage(who).ru_maxrss
           for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
with open(report, "w") as f:
    json.dump({"exit": code, "peak_rss_mib": peak / 1024}, f)
sys.exit(code)
"""


def run_stage(module: str, args: list[str], report: str) -> dict:
    """Runs `python -m module args` in its own process.

    Args:
        module: str. The entry point, e.g. `beam.preprocess`.
        args: list of str. Its command line.
        report: str. Where the child writes its peak RSS.

    Returns:
        `seconds` (wall time of the process) and `peak_rss_mib`.

    Raises:
        RuntimeError: the stage failed (its last output lines in the message).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, module, report, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"{module} failed (exit {done.returncode}):\n{tail}")
    with open(report) as f:
        return {"seconds": round(seconds, 1),
                "peak_rss_mib": round(json.load(f)["peak_rss_mib"], 1)}


def simulate(work: str, events: int, max_events: int) -> dict:
    """Simulated events of one size, written once into `work` and reused.

    Returns:
        The simulator's summary (`users`, `events`, ...), with the folder as `path`.
    """
    from autorisk_tf import simulate as simulator

    path = os.path.join(work, f"sim_{events}_{max_events}")
    marker = os.path.join(path, "summary.json")
    if not os.path.exists(marker):
        if os.path.exists(path):
            shutil.rmtree(path)
        start = time.perf_counter()
        summary = simulator.write_dataset(path, seed=3, num_events=events,
                                          max_events=max_events,
                                          num_shards=max(4, events // 250_000))
        summary["seconds"] = round(time.perf_counter() - start, 1)
        with open(marker, "w") as f:
            json.dump(summary, f)
    with open(marker) as f:
        return {**json.load(f), "path": path}


def run_size(work: str, events: int, max_events: int, steps: int) -> dict:
    """Every stage on one size of simulated events.

    Returns:
        The data's summary and one dict per stage (`seconds`, `peak_rss_mib`, throughput).
    """
    data = simulate(work, events, max_events)
    out = os.path.join(work, f"run_{events}")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    stages = {}
    stages["preprocess"] = run_stage("beam.preprocess", [
        "--input", f"{data['path']}/events/*.csv", "--schema", SCHEMA,
        "--labels", f"{data['path']}/labels.csv", "--output_dir", f"{out}/data",
        "--max_len", str(max_events)], f"{out}/preprocess.json")
    stages["preprocess"]["events_per_s"] = round(data["events"]
                                                 / stages["preprocess"]["seconds"])
    stages["pretrain"] = run_stage("autorisk_tf.train", [
        "--config", SMALL, "--data", f"{out}/data", "--model_dir", f"{out}/run",
        "--steps", str(steps), "--eval_batches", "0", "--verbose", "0"],
        f"{out}/pretrain.json")
    stages["pretrain"]["steps_per_s"] = round(steps / stages["pretrain"]["seconds"], 2)
    stages["export"] = run_stage("export.savedmodel", [
        "--model_dir", f"{out}/run", "--output", f"{out}/models/autorisk"],
        f"{out}/export.json")
    stages["embed"] = run_stage("beam.embed", [
        "--model", f"{out}/models/autorisk/1", "--input", f"{out}/data/*/*.tfrecord",
        "--output", f"{out}/emb/all"], f"{out}/embed.json")
    stages["embed"]["users_per_s"] = round(data["users"] / stages["embed"]["seconds"], 1)
    return {"events": data["events"], "users": data["users"],
            "simulate_seconds": data["seconds"], "stages": stages}


def with_ratios(runs: list[dict]) -> list[dict]:
    """Adds each stage's time and RSS ratios to the first (smallest) run, and the targets.

    Args:
        runs: list of `run_size` results, smallest first.

    Returns:
        The same runs; stages of later runs gain `time_ratio`, `rss_ratio` and, for the
        stages that read every event, `met` against `size_ratio` x 1.1 and 2x.
    """
    base = runs[0]
    for run in runs:
        run["size_ratio"] = round(run["events"] / base["events"], 2)
        for name, stage in run["stages"].items():
            first = base["stages"][name]
            stage["time_ratio"] = round(stage["seconds"] / first["seconds"], 2)
            stage["rss_ratio"] = round(stage["peak_rss_mib"] / first["peak_rss_mib"], 2)
            if name in SCALED and run is not base:
                stage["met"] = (stage["time_ratio"] <= TIME_RATIO * run["size_ratio"]
                                and stage["rss_ratio"] <= RSS_RATIO)
    return runs


def main(argv=None) -> int:
    """Runs every size; prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000",
                        help="Event counts, comma-separated; the first is the reference.")
    parser.add_argument("--max_events", type=int, default=100,
                        help="Longest simulated history (about 50 events a user).")
    parser.add_argument("--steps", type=int, default=200, help="Pre-training steps.")
    parser.add_argument("--work", default=os.path.join(ROOT, "bench_out", "scale"))
    parser.add_argument("--json", default=JSON)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = with_ratios([run_size(args.work, n, args.max_events, args.steps) for n in sizes])
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "targets": f"for the stages {', '.join(SCALED)}: time ratio <= "
                         f"{TIME_RATIO} x size ratio, peak RSS ratio <= {RSS_RATIO}",
              "runs": runs}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("| events | users | stage | seconds | peak RSS MiB | throughput | time ratio "
          "| RSS ratio | met |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for run in runs:
        for name, stage in run["stages"].items():
            rate = next((f"{stage[k]:,} {k[:-6].replace('_', ' ')}/s" for k in
                         ("events_per_s", "users_per_s", "steps_per_s") if k in stage), "")
            met = {True: "yes", False: "no"}.get(stage.get("met"), "")
            print(f"| {run['events']:,} | {run['users']:,} | {name} | {stage['seconds']} | "
                  f"{stage['peak_rss_mib']} | {rate} | {stage['time_ratio']} | "
                  f"{stage['rss_ratio']} | {met} |")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
