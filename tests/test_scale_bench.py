"""benchmarks/scale_bench.py: stage processes, their peak RSS, and the ratios to the first run."""

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "scale_bench.py")
_SPEC = importlib.util.spec_from_file_location("scale_bench", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _run(events, preprocess, embed, pretrain=(10.0, 900.0)):
    def stage(seconds, rss):
        return {"seconds": seconds, "peak_rss_mib": rss}

    return {"events": events, "users": events // 50,
            "stages": {"preprocess": stage(*preprocess), "pretrain": stage(*pretrain),
                       "embed": stage(*embed)}}


def test_ratios_are_to_the_first_run_and_targets_bind_the_scaled_stages():
    runs = bench.with_ratios([_run(1_000_000, (20.0, 300.0), (30.0, 1000.0)),
                              _run(10_000_000, (200.0, 590.0), (400.0, 1100.0),
                                   pretrain=(25.0, 950.0))])
    small, large = runs
    assert small["size_ratio"] == 1.0 and large["size_ratio"] == 10.0
    assert "met" not in small["stages"]["preprocess"]
    preprocess, embed, pretrain = (large["stages"][k] for k in ("preprocess", "embed",
                                                                  "pretrain"))
    assert (preprocess["time_ratio"], preprocess["rss_ratio"]) == (10.0, 1.97)
    assert preprocess["met"] is True
    assert embed["time_ratio"] == 13.33 and embed["met"] is False  # > 11x
    assert pretrain["time_ratio"] == 2.5 and "met" not in pretrain


def test_run_stage_reports_a_process_and_fails_loudly(tmp_path):
    stage = bench.run_stage("platform", [], str(tmp_path / "ok.json"))
    assert set(stage) == {"seconds", "peak_rss_mib"}  # seconds rounded: may read 0.0
    assert stage["seconds"] >= 0 and stage["peak_rss_mib"] > 1
    with pytest.raises(RuntimeError, match="autorisk_tf.no_such_stage failed"):
        bench.run_stage("autorisk_tf.no_such_stage", [], str(tmp_path / "bad.json"))
