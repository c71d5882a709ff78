import gzip
import importlib.util
import json
import os

import numpy as np
import pytest

from autorisk_tf import evaluate
from tests.test_datasets import CDNOW, HEADER, LINES, physionet_files

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "real_data_bench.py")
_SPEC = importlib.util.spec_from_file_location("real_data_bench", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


@pytest.fixture
def data_root(tmp_path):
    """A data root laid out like ../shared/data, with tiny hand-written files."""
    (tmp_path / "online-retail").mkdir()
    with gzip.open(tmp_path / "online-retail" / "online_retail.csv.gz", "wt", encoding="utf-8",
                   newline="") as f:
        f.write(HEADER + "\n".join(LINES) + "\n")
    (tmp_path / "cdnow").mkdir()
    (tmp_path / "cdnow" / "CDNOW_master.txt").write_bytes(CDNOW.encode())
    physionet_files(tmp_path / "physionet2012")
    return str(tmp_path)


def test_task_tables_and_readers(data_root, tmp_path):
    folder = str(tmp_path / "work")
    counts = bench.build_task_tables("country_non_uk", data_root, folder)
    assert counts["customers"] == 3
    assert bench.read_labels(os.path.join(folder, "labels.csv"), "country_non_uk") == {
        "1": 0, "2": 1, "3": 1}
    keys, items = bench.read_event_items(os.path.join(folder, "events.csv"), "stock_code")
    assert keys == ["1", "1", "1", "2", "2", "2", "3"]
    assert items[:3] == ["85123A", "71053", "22139"]
    cd = str(tmp_path / "cd")
    bench.build_task_tables("bought_again", data_root, cd)
    assert bench.read_labels(os.path.join(cd, "labels.csv"), "bought_again") == {
        "00001": 0, "00002": 1, "00003": 0}
    assert open(os.path.join(cd, "events.txt")).readline().split() == [
        "customer_id", "date", "number_of_cds", "dollar_value"]


def test_bag_of_items_is_binary_and_skips_unknown_users():
    bag, vocabulary = evaluate.bag_of_items(["a", "b"], ["a", "a", "b", "z", "b"],
                                            ["x", "x", "y", "x", ""])
    assert vocabulary == ["x", "y"]
    np.testing.assert_array_equal(bag.toarray(), [[1, 0], [0, 1]])


def _seeded(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = y[:, None] * 1.0 + rng.normal(size=(n, 3))
    return np.concatenate([signal, rng.normal(size=(n, 5))], axis=1), y


def test_cv_auc_and_bootstrap_lift_on_seeded_data():
    x, y = _seeded()
    aucs, scores = evaluate.cv_auc(x, y, lambda: evaluate.logistic_regression(1.0))
    assert len(aucs) == 5 and np.mean(aucs) > 0.85
    noise_aucs, noise = evaluate.cv_auc(x[:, 3:], y, lambda: evaluate.logistic_regression(1.0))
    assert abs(np.mean(noise_aucs) - 0.5) < 0.1
    lift, low, high = evaluate.bootstrap_auc_lift(y, noise, scores, rounds=200)
    assert low <= lift <= high and low > 0.25
    same, low, high = evaluate.bootstrap_auc_lift(y, scores, scores, rounds=50)
    assert same == low == high == 0.0


def test_score_join_lifts_the_gbdt_by_the_embeddings_signal_only():
    rng = np.random.default_rng(3)
    n = 600
    features, signal = rng.normal(size=(n, 2)), rng.normal(size=n)
    y = (features[:, 0] + signal + 0.3 * rng.normal(size=n) > 0).astype(int)
    _, base = evaluate.cv_auc(features, y, evaluate.gbdt)
    carrying = rng.normal(size=(n, 30)) * 0.5
    carrying[:, :3] += signal[:, None]
    run = bench.score_join_run(features, carrying, y, base, seed=0)
    assert set(run) == {"seed", "auc", "fold_aucs", "lift", "lift_ci95"} and run["seed"] == 0
    assert len(run["fold_aucs"]) == 5 and run["auc"] > 0.9
    assert run["lift_ci95"][0] > 0.05 and run["lift_ci95"][0] <= run["lift"]
    # Noise joined as its out-of-fold score costs the GBDT little.
    noise = bench.score_join_run(features, rng.normal(size=(n, 30)), y, base, seed=0)
    assert abs(noise["lift"]) < 0.02


def test_fold_index_is_scikit_learns_stratified_split():
    from sklearn.model_selection import StratifiedKFold

    _, y = _seeded(103)
    index = evaluate.fold_index(y)
    splits = list(evaluate.cv_splits(y))
    for fold, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(
            np.zeros(len(y)), y)):
        np.testing.assert_array_equal(np.flatnonzero(index == fold), test)
        np.testing.assert_array_equal(splits[fold][0], train)
        np.testing.assert_array_equal(splits[fold][1], test)
    assert set(np.bincount(index)) <= {20, 21}  # every row once, folds of even size


def test_baseline_rows_name_every_baseline():
    x, y = _seeded(300)
    keys = [f"k{i}" for i in range(len(y))]
    event_keys = [k for k, label in zip(keys, y, strict=True) for _ in range(2)]
    items = [f"i{label}_{(i + j) % 60}" for i, label in enumerate(y) for j in range(2)]
    columns = ["n_events", "c_top0_share", "amount_mean", "hour_3_share", "c_distinct",
               "tenure_days", "recency_days", "amount_missing_share"]
    assert bench.rfm_columns(columns) == [0, 2, 5, 6]
    rows, scores = bench.baseline_rows("t", keys, y, x, columns, event_keys, items)
    assert [r["method"] for r in rows] == ["bag_of_items_lr", "svd32_lr", "handmade_rfm_gbdt",
                                           "handmade_gbdt", "handmade_lr"]
    assert rows[0]["auc"] > 0.9  # items are label-specific
    assert rows[3]["auc"] > 0.8 and scores["gbdt_features"].shape == (300,)
    assert rows[4]["auc"] > 0.8


def test_tuned_logistic_regression_picks_the_c_of_the_best_inner_cv_auc():
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    x, y = _seeded(120, seed=3)
    x = np.concatenate([x, np.random.default_rng(1).normal(size=(120, 40))], axis=1)
    model = evaluate.tuned_logistic_regression().fit(x, y)
    scaled = StandardScaler().fit_transform(x)  # the pipeline scales before the inner folds
    by_c = {}
    for c in evaluate.C_GRID:  # the same inner folds by hand
        aucs = []
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
            fitted = evaluate.logistic_regression(c, standardise=False).fit(scaled[train],
                                                                             y[train])
            aucs.append(roc_auc_score(y[test], fitted.predict_proba(scaled[test])[:, 1]))
        by_c[c] = np.mean(aucs)
    best = max(by_c, key=by_c.get)
    chosen = model[-1]
    assert chosen.C_ == best
    assert best < max(evaluate.C_GRID)  # 45 noise columns for 120 rows: some shrinkage wins
    # The warm-started path stops at a tolerance: at the weakest shrinkage one pair of rows
    # of 24 can swap order (0.0014 of a fold's AUC here).
    np.testing.assert_allclose(chosen.scores_.mean(axis=0).ravel(), list(by_c.values()),
                               atol=3e-3)
    plain = evaluate.tuned_logistic_regression(standardise=False).fit(x, y)
    assert plain.C_ in evaluate.C_GRID and plain.coef_.shape == (1, x.shape[1])


def test_baseline_rows_with_tuned_c_add_both_lr_baselines():
    x, y = _seeded(300)
    keys = [f"k{i}" for i in range(len(y))]
    event_keys = [k for k in keys for _ in range(2)]
    items = [f"i{label}_{(i + j) % 60}" for i, label in enumerate(y) for j in range(2)]
    columns = [f"c{i}" for i in range(x.shape[1])]
    rows, _ = bench.baseline_rows("t", keys, y, x, columns, event_keys, items, tuned_c=True)
    methods = [r["method"] for r in rows]
    assert methods[:4] == ["bag_of_items_lr", "svd32_lr", "bag_of_items_lr_tuned_c",
                           "svd32_lr_tuned_c"]
    assert rows[2]["auc"] > 0.9 and rows[3]["auc"] > 0.5


def test_part_aucs_score_each_part_and_skip_an_empty_one():
    x, y = _seeded(200)
    aucs = bench.part_aucs({"signal": x[:, :3], "noise": x[:, 3:], "ids": x[:, :0]}, y)
    assert set(aucs) == {"signal", "noise"}  # width 0: no row, no crash
    assert aucs["signal"] > 0.8 and abs(aucs["noise"] - 0.5) < 0.15
    # with an ids part, every other part together: the signal without the ids' columns
    aucs = bench.part_aucs({"ids": x[:, 3:], "a": x[:, :1], "b": x[:, 1:3]}, y)
    assert set(aucs) == {"ids", "a", "b", "without_ids"}
    assert aucs["without_ids"] > max(aucs["a"], aucs["b"]) and abs(aucs["ids"] - 0.5) < 0.15


def test_save_task_rows_replaces_the_task_and_records_the_attempt(tmp_path):
    path = str(tmp_path / "bench.json")
    results = {"rows": [{"task": "a", "method": "old", "auc": 0.5},
                        {"task": "b", "method": "kept", "auc": 0.6}]}
    attempt = {"name": "try", "tasks_done": [], "figures": {}}
    results["attempts"] = [attempt]
    bench.save_task_rows(path, results, "a", [{"task": "a", "method": "new", "auc": 0.7}],
                         attempt)
    bench.save_task_rows(path, results, "c", [{"task": "c", "method": "x", "auc": 0.8}],
                         attempt)
    with open(path) as f:
        saved = json.load(f)
    assert [(r["task"], r["method"]) for r in saved["rows"]] == [("b", "kept"), ("a", "new"),
                                                                 ("c", "x")]
    assert saved["attempts"] == [{"name": "try", "tasks_done": ["a", "c"],
                                  "figures": {"a/new": 0.7, "c/x": 0.8}}]
    assert "protocol" in saved


def test_physionet_tasks_share_tables_and_read_the_record_key(data_root, tmp_path):
    folder = str(tmp_path / "pn")
    counts = bench.build_task_tables("long_stay", data_root, folder)
    assert counts["events"] == 7 and counts["stays"] == 2
    assert bench.read_labels(os.path.join(folder, "labels.csv"), "long_stay") == {
        "132539": 0, "132540": 1}
    assert bench.TASKS["death"]["as_of"] == "2012-01-03T00:00:00"


def test_per_category_baselines_and_columns_without_values(tmp_path):
    x, y = _seeded(300)
    columns = ["n_events", "v_by0_first", "v_by0_last", "v_by1_count", "v_mean", "v_by1_std",
               "p_top0_count", "recency_days"]
    assert bench.per_category_columns(columns) == [1, 2, 3]
    rows, _ = bench.baseline_rows("t", [f"k{i}" for i in range(300)], y, x, columns, None, None)
    assert [r["method"] for r in rows] == ["handmade_per_category_lr",
                                           "handmade_per_category_gbdt", "handmade_gbdt",
                                           "handmade_lr"]
    assert rows[0]["auc"] > 0.7 and rows[3]["auc"] > 0.8
    features = tmp_path / "f" / "features"
    features.mkdir(parents=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": ["a", "b", "c"], "x": [1.0, 2.0, np.nan],
                             "empty": [np.nan] * 3}), features / "features-0.parquet")
    from autorisk_tf.data.output_folder import write_manifest

    write_manifest(str(features))  # as beam.features would
    (tmp_path / "f" / "labels.csv").write_text("record_id,death\na,1\nb,0\nc,\n")
    keys, feats, cols, labels = bench.labelled_features(str(tmp_path / "f"), "death")
    assert keys == ["a", "b"] and cols == ["x"] and labels.tolist() == [1, 0]
    assert feats.tolist() == [[1.0], [2.0]]
