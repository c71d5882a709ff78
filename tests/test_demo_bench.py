"""benchmarks/demo_bench.py: step durations read from the demo's step titles."""

import importlib.util
import os

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "demo_bench.py")
_SPEC = importlib.util.spec_from_file_location("demo_bench", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_step_seconds_reads_each_step_until_the_next_one_or_the_end():
    log = "\n".join([
        "== [0:00] 1. simulate a log",
        "   and a second line of the title",
        "rows in 10 = used 9 + rejected 1",
        "== [0:02] 2. preprocess",
        "== [1:38] 3b. features (python -m beam.features)",
        "== done in 2 min 0 s",
    ])
    steps = bench.step_seconds(log, 120.4)
    assert [s["step"] for s in steps] == ["1", "2", "3b"]
    assert [s["start_s"] for s in steps] == [0, 2, 98]
    assert [s["seconds"] for s in steps] == [2, 96, 22.4]
    assert steps[2]["title"] == "features (python -m beam.features)"


def test_terminal_lines_count_each_run_of_progress_lines_once():
    output = "\n".join([
        "== [0:18] 4. pre-train",
        "step 15/300 mlm/loss 8.7 loss 8.7",
        "step 30/300 mlm/loss 7.8 loss 7.8",
        "step 300/300 mlm/loss 4.8 loss 4.9",
        "valid/qt/accuracy 0.14",
        "step 0: wrote demo_out/random_weights/encoder.keras",
        "step 5/10 loss 1.0",
    ])
    assert bench.terminal_lines(output) == 5
    assert bench.terminal_lines("a\nb\n") == 2
