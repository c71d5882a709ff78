import csv
import filecmp

import numpy as np
import pytest

from autorisk_tf import simulate


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        simulate.write_dataset(str(tmp_path / name), seed=seed, num_users=50, num_shards=2,
                               block_users=16)
    for rel in ("labels.csv", "events/part-00000.csv", "events/part-00001.csv"):
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False)
        assert not filecmp.cmp(tmp_path / "a" / rel, tmp_path / "c" / rel, shallow=False)


def test_parquet_holds_the_same_rows_as_csv(tmp_path):
    import csv

    import pyarrow.parquet as pq

    simulate.write_dataset(str(tmp_path / "c"), seed=1, num_users=20, num_shards=1)
    simulate.write_dataset(str(tmp_path / "p"), seed=1, num_users=20, num_shards=1, fmt="parquet")
    with open(tmp_path / "c" / "events" / "part-00000.csv", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    table = pq.read_table(tmp_path / "p" / "events" / "part-00000.parquet").to_pylist()
    assert len(csv_rows) == len(table) > 100
    for a, b in zip(csv_rows, table, strict=True):
        assert (a["user_id"], a["event_time"], a["item"]) == (b["user_id"], b["event_time"],
                                                              b["item"])
        assert (a["amount"] == "") == (b["amount"] is None)


def test_profiles_lengths_and_text():
    users = list(simulate.iter_users(seed=2, num_users=1500))
    lengths = np.array([len(u) for u in users])
    assert lengths.min() <= 6 and lengths.max() >= 1000  # a handful to thousands
    assert np.median(lengths) < lengths.mean() / 1.5  # heavy tail
    assert {u.labels["profile"] for u in users} == set(simulate.PROFILES)
    items = {item for u in users[:50] for item in u.item}
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in i) for i in items)  # Chinese
    assert any(i.isascii() and i for i in items)  # English
    for u in users[:50]:
        assert np.all(np.diff(u.times_ms) >= 0)


@pytest.mark.slow
def test_takeover_needs_order_and_timing():
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    features, labels, rule = [], [], []
    for u in simulate.iter_users(seed=11, num_users=3000):
        counts = [u.event_type.count(t) for t in simulate.EVENT_TYPES]
        new_logons = sum(d == "new" and e == "logon"
                         for d, e in zip(u.device, u.event_type, strict=True))
        amounts = np.array([a for a in u.amount if a is not None] or [0.0])
        features.append(counts + [new_logons, len(u), amounts.mean(), amounts.max(),
                                  amounts.sum(), np.median(amounts), (amounts >= 5000).sum()])
        labels.append(u.labels["takeover"])
        rule.append(simulate.takeover_rule(u.times_ms, u.event_type, u.device, u.amount))
    labels = np.array(labels)
    assert 0.05 < labels.mean() < 0.2
    scores = cross_val_predict(HistGradientBoostingClassifier(random_state=0),
                               np.array(features), labels, cv=5, method="predict_proba")[:, 1]
    assert roc_auc_score(labels, scores) < 0.75
    assert roc_auc_score(labels, np.array(rule, dtype=float)) > 0.95


def test_planted_events_name_the_takeover_triple_and_the_decoys(tmp_path):
    simulate.write_dataset(str(tmp_path), seed=11, num_users=300, num_shards=1)
    with open(tmp_path / "planted_events.csv", encoding="utf-8") as f:
        planted = list(csv.DictReader(f))
    with open(tmp_path / "labels.csv", encoding="utf-8") as f:
        takeover = {row["user_id"]: row["takeover"] == "1" for row in csv.DictReader(f)}
    with open(tmp_path / "events" / "part-00000.csv", encoding="utf-8") as f:
        events = {(row["user_id"], row["event_time"], row["event_type"])
                  for row in csv.DictReader(f)}
    by_user = {}
    for row in planted:
        assert (row["user_id"], row["event_time"], row["event_type"]) in events
        by_user.setdefault(row["user_id"], []).append(row)
    assert {u for u, t in takeover.items() if t} == {
        u for u, rows in by_user.items() if rows[0]["pattern"] == "takeover"}
    assert sum(rows[0]["pattern"] == "decoy" for rows in by_user.values()) > 150
    for rows in by_user.values():
        assert sorted(r["role"] for r in rows) == [
            "large_transfer", "new_device_logon", "password_change"]
        assert len({r["pattern"] for r in rows}) == 1
    for user in simulate.iter_users(seed=11, num_users=300):
        # The planted events alone make the label (the tight triple) or not (a decoy).
        index = [list(user.times_ms).index(t) for t, *_ in user.planted]
        rule = simulate.takeover_rule([user.times_ms[i] for i in index],
                                      [user.event_type[i] for i in index],
                                      [user.device[i] for i in index],
                                      [user.amount[i] for i in index])
        assert rule == (user.labels["takeover"] == 1) or not user.planted
        # Takeovers and decoys hold the same events from a new device: only timing differs.
        assert all(user.device[i] == "new" for i in index)


def test_rings_run_one_script_on_top_of_their_own_activity(tmp_path):
    summary = simulate.write_dataset(str(tmp_path), seed=3, num_users=20, num_shards=1,
                                     num_rings=2, ring_size=4)
    assert summary["users"] == 28 and summary["rings"] == 2
    with open(tmp_path / "rings.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["user_id"] for r in rows[:4]] == [f"ring000-0{m}" for m in range(4)]
    assert {r["ring"] for r in rows} == {"0", "1"}
    rings = list(simulate.ring_users(3, 2, 4))
    assert [u.user_id for u in rings[0][0]] == [r["user_id"] for r in rows[:4]]
    scripted = []
    for user in rings[0][0]:
        assert user.labels["profile"] == "fraud_ring" and user.labels["is_risk"] == 1
        assert list(user.times_ms) == sorted(user.times_ms)
        new = [i for i, d in enumerate(user.device) if d == "new"
               and user.event_type[i] == "logon"]
        scripted.append({(user.event_type[i], user.item[i]) for i in range(len(user))
                         if user.item[i]})
        assert new  # the script's new-device logon
    shared = set.intersection(*scripted)
    assert len(shared) >= 2  # the script's items, in every account
    other = {(t, i) for u in rings[1][0] for t, i in zip(u.event_type, u.item, strict=True)
             if i}
    assert not shared <= other  # another ring runs another script
    again = list(simulate.ring_users(3, 2, 4))
    assert [u.amount for u in again[1][0]] == [u.amount for u in rings[1][0]]
    with pytest.raises(ValueError, match="ring_size must be at least 2"):
        list(simulate.ring_users(3, 1, 1))
