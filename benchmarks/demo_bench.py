"""Demo benchmark: the wall time of `make demo`'s job, step by step, against a yardstick.

  python benchmarks/demo_bench.py [--python .venv/bin/python]

Runs `scripts/demo.sh` (everything after the install), reads the time since the start that
each step's title shows, and measures a float32 4096x4096 matmul before and after the run
(speeds vary 4x between days on the same machine type). Target: the whole job under 5
minutes on 2 cores, and its output (standard output and error) on two screens: at most 100
lines as a terminal shows them, where pre-training's progress is one bar (off a terminal it
is a line every 5% of the steps). Prints a table and writes `benchmarks/demo_bench.json`.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
JSON = os.path.join(HERE, "demo_bench.json")
TARGET_SECONDS = 300
TARGET_LINES = 100
STEP = re.compile(r"^== \[(\d+):(\d\d)\] (\S+) (.*)$")
PROGRESS = re.compile(r"^step \d+/\d+ ")


def terminal_lines(output: str) -> int:
    """How many lines the output takes on a terminal: each run of progress lines is one bar.

    Args:
        output: str. The demo's output, captured off a terminal.

    Returns:
        The line count, with consecutive `step N/M ...` lines counted once.
    """
    count, in_progress = 0, False
    for line in output.splitlines():
        progress = bool(PROGRESS.match(line))
        count += not (progress and in_progress)
        in_progress = progress
    return count


def step_seconds(log: str, total: float) -> list[dict]:
    """Each step's name, title and duration, from the `== [m:ss] name title` lines.

    Args:
        log: str. The demo's standard output.
        total: float. The whole run's seconds (the last step ends there).

    Returns:
        One dict per step: `step`, `title`, `start_s`, `seconds`.
    """
    starts = [(int(m[1]) * 60 + int(m[2]), m[3], m[4])
              for m in map(STEP.match, log.splitlines()) if m]
    ends = [start for start, _, _ in starts[1:]] + [total]
    return [{"step": name.rstrip("."), "title": title, "start_s": start,
             "seconds": round(end - start, 1)}
            for (start, name, title), end in zip(starts, ends, strict=True)]


def main(argv=None) -> int:
    """Runs the demo once; prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"),
                        help="The interpreter the demo runs with.")
    parser.add_argument("--json", default=JSON)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from encoder_bench import matmul_gflops

    before = matmul_gflops()
    start = time.perf_counter()
    run = subprocess.run(["bash", "scripts/demo.sh", args.python], cwd=ROOT,
                         capture_output=True, text=True)
    total = time.perf_counter() - start
    after = matmul_gflops()
    if run.returncode:
        sys.stderr.write(run.stdout[-4000:] + run.stderr[-4000:])
        print(f"the demo failed (exit {run.returncode})", file=sys.stderr)
        return 1
    gflops = (before + after) / 2
    matmul_s = 2 * 4096**3 / gflops / 1e9
    steps = step_seconds(run.stdout, total)
    lines = terminal_lines(run.stdout + run.stderr)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "matmul_4096_gflops_before": round(before, 1),
                          "matmul_4096_gflops_after": round(after, 1)},
              "measured": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "total_s": round(total, 1), "total_in_matmuls": round(total / matmul_s),
              "target": f"< {TARGET_SECONDS} s", "met": total < TARGET_SECONDS,
              "output_lines": len((run.stdout + run.stderr).splitlines()),
              "terminal_lines": lines, "lines_target": f"<= {TARGET_LINES}",
              "lines_met": lines <= TARGET_LINES, "steps": steps}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"4096x4096 float32 matmul: {before:.0f} GFLOP/s before, {after:.0f} after")
    print(f"| {'step':<4} | {'seconds':>7} | title")
    print("|------|---------|------")
    for row in steps:
        print(f"| {row['step']:<4} | {row['seconds']:>7.1f} | {row['title'][:70]}")
    print(f"total {total:.0f} s ({total / matmul_s:.0f} matmuls); target < {TARGET_SECONDS} s:"
          f" {'met' if total < TARGET_SECONDS else 'not met'}")
    print(f"output {lines} lines on a terminal ({result['output_lines']} captured); target"
          f" <= {TARGET_LINES}:"
          f" {'met' if lines <= TARGET_LINES else 'not met'}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
