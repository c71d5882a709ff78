import importlib.util
import os
import sys

import pytest

_HERE = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")
sys.path.insert(0, _HERE)
_SPEC = importlib.util.spec_from_file_location("pretrain_curve",
                                               os.path.join(_HERE, "pretrain_curve.py"))
curve = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(curve)


def test_summarise_curve_groups_seeds_per_task_and_steps():
    runs = [{"task": "b", "steps": 300, "seed": 0, "auc": 0.70, "pretrain_seconds": 10.0},
            {"task": "b", "steps": 0, "seed": 0, "auc": 0.60, "pretrain_seconds": 1.0},
            {"task": "a", "steps": 300, "seed": 0, "auc": 0.90, "pretrain_seconds": 20.0},
            {"task": "b", "steps": 300, "seed": 1, "auc": 0.74, "pretrain_seconds": 30.0}]
    rows = curve.summarise_curve(runs)
    assert [(r["task"], r["steps"]) for r in rows] == [("b", 0), ("b", 300), ("a", 300)]
    assert rows[1]["auc"] == pytest.approx(0.72)
    assert rows[1]["auc_range"] == [0.70, 0.74]
    assert rows[1]["seeds"] == [0, 1]
    assert rows[1]["pretrain_seconds"] == pytest.approx(20.0)
    assert rows[2]["auc_range"] == [0.90, 0.90]


def test_main_names_the_missing_preprocessing_and_unknown_tasks(tmp_path):
    with pytest.raises(SystemExit, match="has no preprocessed data; run real_data_bench.py"):
        curve.main(["--work", str(tmp_path), "--tasks", "bought_after"])
    with pytest.raises(SystemExit, match="unknown task"):
        curve.main(["--work", str(tmp_path), "--tasks", "churn"])
