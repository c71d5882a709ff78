r"""Simulated risk-control event logs: `python -m autorisk_tf.simulate`.

Writes a sharded event table (CSV or Parquet) and a label table, deterministic for a seed
and streamed to disk block by block, so ten million events fit in bounded memory.

Users belong to behaviour profiles (ordinary shoppers, cash-out merchants, promotion abusers,
account takeovers). Each user has a session-structured history (a logon from the app, PC, mini
program or H5, sometimes from a new device, then payments, transfers, recharges, refunds ...)
with amounts from per-behaviour distributions and item names mixing Chinese and English.
History lengths are heavy-tailed, from a handful to several thousand events.

Labels (`labels.csv`):
  is_risk     1 for cash-out merchants, promotion abusers and account takeovers.
  takeover    1 when the history holds a logon from a new device, a password change within
              10 minutes and then a transfer of at least 5,000 within 30 minutes. Most other
              users hold the same three events spread out in time, so counting events cannot
              find takeovers; the order and timing of events can (`takeover_rule`).
  age_band    18-24 / 25-34 / 35-49 / 50+: shifts the hours of activity, weakly.
  preference  games / travel / shopping / utilities: shifts the item mix, weakly.
  profile     the behaviour profile.

With `--num_analogies Q`, 4*Q more users are planted for the sequence analogy of the report:
each quadruple (a, b, c, d) holds two ordinary users' behaviour, P and Q, with one factor set
to one of two values x, y (pay method, amount level or item family): a = P with x, b = P with
y, c = Q with x, d = Q with y, so emb(a) - emb(b) + emb(d) should land near emb(c). They are
listed in `analogies.csv`.

With `--num_rings R --ring_size S`, R fraud rings of S accounts are planted (`ring_users`):
the accounts of a ring are run from one script (the same scripted sessions at the same hour
of day, item names, pay method and amounts up to a few percent, a new device at the same
session) on top of each account's own ordinary activity. `rings.csv` lists them
(`user_id`, `ring`); their `profile` is `fraud_ring`, `is_risk` 1.

`planted_events.csv` names the events of every planted takeover pattern (`user_id`,
`event_time`, `event_type`, `role`, `pattern`: `takeover` for the tight triple that makes
the label, `decoy` for the same three events, also from a new device, spread over days),
the truth that reason codes are checked against (`autorisk_tf.explain`).

Example:
  python -m autorisk_tf.simulate --output_dir /tmp/sim --num_users 2000 --seed 7
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Iterator

import numpy as np
from absl import app, flags, logging

EVENT_TYPES = ("logon", "password_change", "create_transaction", "payment",
               "instant_transfer", "recharge", "refund")
CHANNELS = ("app", "pc", "mini_program", "h5")
PAY_METHODS = ("credit_pay", "balance", "bank_card")
AGE_BANDS = ("18-24", "25-34", "35-49", "50+")
PREFERENCES = ("games", "travel", "shopping", "utilities")
PROFILES = ("ordinary", "cash_out", "promo_abuser", "account_takeover")
PROFILE_WEIGHTS = (0.74, 0.08, 0.08, 0.10)
COLUMNS = ("user_id", "event_time", "event_type", "channel", "device", "pay_method",
           "amount", "item")
LABEL_COLUMNS = ("user_id", "is_risk", "takeover", "age_band", "preference", "profile")
ANALOGY_COLUMNS = ("a", "b", "c", "d", "factor", "field", "x", "y")
# The factors of the planted analogies, the event column each changes, its two values (x, y).
ANALOGY_FACTORS = (("pay_method", "pay_method", "credit_pay", "bank_card"),
                   ("amount_level", "amount", "low", "high"),
                   ("item_family", "item", "travel", "games"))
_AMOUNT_LEVELS = {"low": 0.2, "high": 5.0}
_ANALOGY_INDEX = 1 << 30  # simulate_user indices of planted base behaviours start here
_RING_INDEX = 1 << 31  # simulate_user indices of ring accounts' own activity start here
RING_COLUMNS = ("user_id", "ring")
_RING_ACTIONS = ("payment", "recharge", "instant_transfer", "create_transaction")
_RING_AMOUNTS = (99.0, 199.0, 299.0, 499.0, 999.0, 1999.0)
_RING_OWN_EVENTS = 60  # most events of an account's own activity

# The takeover pattern (the order-dependent label).
TAKEOVER_LOGON_TO_PASSWORD_S = 600
TAKEOVER_PASSWORD_TO_TRANSFER_S = 1800
TAKEOVER_MIN_AMOUNT = 5000.0
# The role of each event of a planted takeover (or decoy) in `planted_events.csv`.
PLANTED_ROLES = {"logon": "new_device_logon", "password_change": "password_change",
                 "instant_transfer": "large_transfer"}
PLANTED_COLUMNS = ("user_id", "event_time", "event_type", "role", "pattern")

_ACTIONS = EVENT_TYPES[1:]  # every event but logon; logons open sessions
# Per profile: probability of each action (password_change ... refund), of a new device per
# session, of each pay method, and the median amount.
_PROFILE_ACTIONS = {
    "ordinary": (0.004, 0.30, 0.36, 0.08, 0.20, 0.056),
    "cash_out": (0.004, 0.33, 0.36, 0.20, 0.03, 0.076),
    "promo_abuser": (0.004, 0.14, 0.20, 0.04, 0.44, 0.176),
    "account_takeover": (0.004, 0.30, 0.36, 0.08, 0.20, 0.056),
}
_PROFILE_NEW_DEVICE = {"ordinary": 0.03, "cash_out": 0.05, "promo_abuser": 0.35,
                       "account_takeover": 0.03}
_PROFILE_PAY = {"ordinary": (0.3, 0.4, 0.3), "cash_out": (0.8, 0.05, 0.15),
                "promo_abuser": (0.2, 0.6, 0.2), "account_takeover": (0.3, 0.4, 0.3)}
_TYPE_AMOUNT_MEDIAN = {"create_transaction": 80.0, "payment": 80.0, "instant_transfer": 150.0,
                       "recharge": 30.0, "refund": 60.0}
_AGE_PEAK_HOUR = {"18-24": 22, "25-34": 20, "35-49": 12, "50+": 9}

_SURNAMES = ("Feng", "Qi", "Wang", "Li", "Zhang", "Chen", "王", "李", "张", "刘", "陈", "赵")
_STATIONS = ("汽车南站", "Bus terminal (south district)", "火车东站", "Airport Line",
             "客运中心", "West Lake stop")
_PRODUCTS = ("iPhone case", "运动鞋", "milk tea 奶茶", "T-shirt", "零食大礼包", "USB-C cable",
             "面膜", "coffee beans")
_CARRIERS = ("China Unicom", "中国移动", "China Telecom")
_CATALOG = {
    "travel": ("DiDi Express-Driver {s}", "滴滴快车-{s}师傅", "Bus ticket**{st}",
               "高铁票 {st}"),
    "games": ("王者荣耀 {n}点券", "Game coins x{n}", "Steam wallet {n}", "和平精英 UC x{n}"),
    "shopping": ("Taobao order {p}", "天猫超市 {p}", "Starbucks {p}", "京东 {p}"),
    "utilities": ("{c} recharge of {n} RMB", "电费缴纳 {n}元", "Water bill {n}",
                  "{c} 话费充值 {n}元"),
}
# 2024-01-04T00:00:00Z, a Thursday: 104 weeks before 2026-01-01, so that the longest
# simulated histories (up to about 16 months) end well before today (times after the
# job starts are implausible to beam.preprocess).
_START_MS = 1_704_326_400_000


@dataclasses.dataclass
class User:
    """One simulated user: labels and time-sorted events (parallel lists).

    `planted` lists the events of a planted takeover pattern as `(time_ms, event_type, role,
    pattern)`: role `new_device_logon`, `password_change` or `large_transfer`; pattern
    `takeover` (the tight triple that makes the label) or `decoy` (the same three events,
    also from a new device, spread over days, not a takeover).
    """

    user_id: str
    labels: dict
    times_ms: np.ndarray
    event_type: list
    channel: list
    device: list
    pay_method: list
    amount: list
    item: list
    planted: list = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times_ms)

    def rows(self) -> Iterator[tuple]:
        """Yields CSV-ready rows (ISO 8601 times, "" for missing values)."""
        times = _iso_time(self.times_ms)
        for i in range(len(self)):
            amount = self.amount[i]
            yield (self.user_id, str(times[i]), self.event_type[i], self.channel[i],
                   self.device[i], self.pay_method[i],
                   "" if amount is None else f"{amount:.2f}", self.item[i])


def _item_text(rng: np.random.Generator, preference: str, event_type: str) -> str:
    if event_type in ("logon", "password_change"):
        return ""
    if event_type == "instant_transfer":
        name = _SURNAMES[rng.integers(len(_SURNAMES))]
        return f"转账给 {name}" if rng.random() < 0.5 else f"Transfer to {name}"
    if event_type == "recharge":
        group = "games" if rng.random() < 0.5 else "utilities"
    else:
        group = preference if rng.random() < 0.4 else PREFERENCES[rng.integers(4)]
    templates = _CATALOG[group]
    template = templates[rng.integers(len(templates))]
    return template.format(
        s=_SURNAMES[rng.integers(len(_SURNAMES))], st=_STATIONS[rng.integers(len(_STATIONS))],
        p=_PRODUCTS[rng.integers(len(_PRODUCTS))], c=_CARRIERS[rng.integers(len(_CARRIERS))],
        n=int(rng.choice((10, 30, 50, 60, 100, 300, 648))))


def _amount(rng: np.random.Generator, profile: str, event_type: str) -> float | None:
    median = _TYPE_AMOUNT_MEDIAN.get(event_type)
    if median is None:
        return None
    if profile == "cash_out" and event_type in ("payment", "create_transaction"):
        return float(rng.integers(10, 50) * 100)  # round, large amounts
    value = median * float(np.exp(rng.normal(0.0, 1.0)))
    return round(min(value, 4_000.0), 2)


def _iso_time(times_ms):
    """ISO 8601 text of times in milliseconds, to the second (as the event files hold them)."""
    return np.datetime_as_string(np.asarray(times_ms).astype("datetime64[ms]"), unit="s")


def simulate_user(seed: int, index: int, max_events: int = 8000) -> User:
    """Simulates one user, deterministically for `(seed, index)`.

    Args:
        seed: int. Seed of the whole data set.
        index: int. Index of the user.
        max_events: int. Upper bound on the history length.

    Returns:
        The user, with events sorted by time.
    """
    rng = np.random.default_rng([seed, index])
    profile = PROFILES[rng.choice(len(PROFILES), p=PROFILE_WEIGHTS)]
    age_band = AGE_BANDS[rng.integers(len(AGE_BANDS))]
    preference = PREFERENCES[rng.integers(len(PREFERENCES))]
    target = int(np.clip(np.exp(rng.normal(3.6, 1.3)), 4, max_events - 3))

    events = []  # (time_ms, type, channel, device, pay_method, amount, item)
    day = float(rng.integers(0, 90))
    while len(events) < target:
        day += rng.exponential(min(2.0, 1500.0 / target))
        hour = (_AGE_PEAK_HOUR[age_band] + rng.normal(0, 3.5)) % 24
        t = _START_MS + int((int(day) * 24 + hour) * 3_600_000)
        channel = CHANNELS[rng.choice(4, p=(0.6, 0.25, 0.1, 0.05))]
        device = "new" if rng.random() < _PROFILE_NEW_DEVICE[profile] else "known"
        events.append((t, "logon", channel, device, "", None, ""))
        for _ in range(min(int(rng.geometric(0.3)), target - len(events))):
            t += int(rng.exponential(40_000)) + 1000
            kind = _ACTIONS[rng.choice(len(_ACTIONS), p=_PROFILE_ACTIONS[profile])]
            pay = (PAY_METHODS[rng.choice(3, p=_PROFILE_PAY[profile])]
                   if kind in ("payment", "instant_transfer", "recharge") else "")
            events.append((t, kind, channel, device, pay, _amount(rng, profile, kind),
                           _item_text(rng, preference, kind)))

    span_end = max(e[0] for e in events)
    big = round(TAKEOVER_MIN_AMOUNT * float(np.exp(rng.uniform(0.0, 1.2))), 2)
    transfer_item = _item_text(rng, preference, "instant_transfer")
    channel = CHANNELS[rng.integers(2)]
    if profile == "account_takeover":
        t = span_end - int(rng.uniform(0, 20) * 86_400_000)
        t1 = t + int(rng.uniform(30, TAKEOVER_LOGON_TO_PASSWORD_S - 60) * 1000)
        t2 = t1 + int(rng.uniform(30, TAKEOVER_PASSWORD_TO_TRANSFER_S - 60) * 1000)
        episode = [(t, "logon", channel, "new", "", None, ""),
                   (t1, "password_change", channel, "new", "", None, ""),
                   (t2, "instant_transfer", channel, "new", "balance", big, transfer_item)]
    elif rng.random() < 0.85:
        # A decoy: the same three events from a new device, but days apart and in a random
        # order, so that only the tight timing and order tell a takeover.
        first = span_end - 40 * 86_400_000
        times = sorted(first + int(x) for x in rng.uniform(0, 40 * 86_400_000, 3))
        times = [times[0], times[1] + 2 * 86_400_000, times[2] + 4 * 86_400_000]
        kinds = [("logon", "", None, ""), ("password_change", "", None, ""),
                 ("instant_transfer", "balance", big, transfer_item)]
        order = rng.permutation(3)
        episode = [(times[i], kinds[order[i]][0], channel, "new", *kinds[order[i]][1:])
                   for i in range(3)]
    else:
        episode = []
    pattern = "takeover" if profile == "account_takeover" else "decoy"
    planted = [(e[0], e[1], PLANTED_ROLES[e[1]], pattern) for e in episode]
    events.extend(episode)
    events.sort(key=lambda e: e[0])

    columns = list(zip(*events, strict=True))
    labels = {"is_risk": int(profile != "ordinary"),
              "takeover": int(profile == "account_takeover"),
              "age_band": age_band, "preference": preference, "profile": profile}
    return User(f"u{index:08d}", labels, np.asarray(columns[0], dtype=np.int64),
                *[list(c) for c in columns[1:]], planted=sorted(planted))


def takeover_rule(times_ms, event_type, device, amount) -> bool:
    """The generating rule of the `takeover` label, applied to one time-sorted history.

    Args:
        times_ms: sequence of int. Event times in milliseconds, sorted.
        event_type: sequence of str. Event types.
        device: sequence of str. `new` or `known`.
        amount: sequence of float or None. Amounts.

    Returns:
        True when a new-device logon is followed by a password change within 10 minutes and
        then by an instant transfer of at least 5,000 within 30 minutes of the change.
    """
    last_new_logon = None
    last_password = None
    for t, kind, dev, amt in zip(times_ms, event_type, device, amount, strict=True):
        if kind == "logon" and dev == "new":
            last_new_logon = t
        elif kind == "password_change" and last_new_logon is not None and (
                t - last_new_logon <= TAKEOVER_LOGON_TO_PASSWORD_S * 1000):
            last_password = t
        elif (kind == "instant_transfer" and last_password is not None
              and amt is not None and amt >= TAKEOVER_MIN_AMOUNT
              and t - last_password <= TAKEOVER_PASSWORD_TO_TRANSFER_S * 1000):
            return True
    return False


def with_factor(user: User, factor: str, value: str, seed: int) -> User:
    """The same behaviour with one factor set to one value (a planted analogy user).

    Args:
        user: User. The base behaviour.
        factor: str. `pay_method` (every pay method set to `value`), `amount_level` (every
            amount scaled, `low` x0.2 or `high` x5) or `item_family` (every catalogue item
            redrawn from the `value` family, with draws that depend on `seed` only).
        value: str. One of the factor's two values in `ANALOGY_FACTORS`.
        seed: int. Seed of the item redraw; the same for both values of one quadruple.

    Returns:
        A new User (same id, labels and times).
    """
    changed = dataclasses.replace(user, pay_method=list(user.pay_method),
                                  amount=list(user.amount), item=list(user.item))
    if factor == "pay_method":
        changed.pay_method = [value if p else p for p in user.pay_method]
    elif factor == "amount_level":
        changed.amount = [None if a is None else round(a * _AMOUNT_LEVELS[value], 2)
                          for a in user.amount]
    elif factor == "item_family":
        rng = np.random.default_rng([seed, 1 << 42])
        templates = _CATALOG[value]
        for i, kind in enumerate(user.event_type):
            if kind in ("payment", "create_transaction"):
                changed.item[i] = templates[rng.integers(len(templates))].format(
                    s=_SURNAMES[rng.integers(len(_SURNAMES))],
                    st=_STATIONS[rng.integers(len(_STATIONS))],
                    p=_PRODUCTS[rng.integers(len(_PRODUCTS))],
                    c=_CARRIERS[rng.integers(len(_CARRIERS))], n=30)
    else:
        raise ValueError(f"unknown analogy factor {factor!r}")
    return changed


def analogy_quadruples(seed: int, count: int, max_events: int = 8000
                       ) -> Iterator[tuple[list[User], dict]]:
    """Planted analogy quadruples, deterministic for a seed.

    Base behaviours are ordinary users (labels 0) with 20 to 400 events, at least 5 of them
    payments. Factors take turns: pay method, amount level, item family.

    Args:
        seed: int. Seed of the data set.
        count: int. Number of quadruples.
        max_events: int. Longest history.

    Yields:
        `([a, b, c, d], row)`: the users (ids `an<quadruple>-<role>`) and their
        `analogies.csv` row (with `field`, the event column the factor changes).
    """
    index = _ANALOGY_INDEX
    for quadruple in range(count):
        bases = []
        while len(bases) < 2:
            user = simulate_user(seed, index, max_events)
            index += 1
            if (user.labels["profile"] == "ordinary" and 20 <= len(user) <= 400
                    and user.event_type.count("payment") >= 5):
                bases.append(user)
        factor, field, x, y = ANALOGY_FACTORS[quadruple % len(ANALOGY_FACTORS)]
        users = []
        for role, base, value in (("a", bases[0], x), ("b", bases[0], y),
                                  ("c", bases[1], x), ("d", bases[1], y)):
            user = with_factor(base, factor, value, seed=index + (base is bases[1]))
            user.user_id = f"an{quadruple:05d}-{role}"
            users.append(user)
        yield users, dict(zip(ANALOGY_COLUMNS,
                              [u.user_id for u in users] + [factor, field, x, y], strict=True))


def ring_users(seed: int, num_rings: int, ring_size: int, max_events: int = 8000,
               ) -> Iterator[tuple[list[User], list[dict]]]:
    """Planted fraud rings, deterministic for a seed: accounts run from one script.

    A ring's script: 6 to 10 sessions, days apart, at one hour of day on one channel, each
    a logon then 2 to 4 actions with fixed item names, one pay method and amounts from a
    price list; the logon of one session is from a new device. Every account runs the
    script from its own start day (up to 3 days apart), minutes and amounts jittered
    (amounts by about 3%), on top of its own ordinary activity (at most 60 events of an
    ordinary-profile history).

    Args:
        seed: int. Seed of the data set.
        num_rings: int. Number of rings.
        ring_size: int. Accounts per ring (at least 2).
        max_events: int. Longest history of an account's own activity.

    Yields:
        `(users, rows)`: the ring's accounts (ids `ring<r>-<m>`) and their `rings.csv` rows.
    """
    if num_rings and ring_size < 2:
        raise ValueError(f"ring_size must be at least 2, got {ring_size}")
    index = _RING_INDEX
    for ring in range(num_rings):
        rng = np.random.default_rng([seed, 1 << 43, ring])
        hour = float(rng.uniform(0, 24))
        channel = CHANNELS[rng.integers(len(CHANNELS))]
        pay = PAY_METHODS[rng.integers(len(PAY_METHODS))]
        preference = PREFERENCES[rng.integers(len(PREFERENCES))]
        start_day = float(rng.integers(20, 100))
        sessions = int(rng.integers(6, 11))
        new_device = int(rng.integers(sessions))
        script, day = [], 0.0
        for _ in range(sessions):
            day += float(rng.exponential(2.0)) + 0.5
            actions = []
            for _ in range(int(rng.integers(2, 5))):
                kind = _RING_ACTIONS[rng.integers(len(_RING_ACTIONS))]
                actions.append((kind, _item_text(rng, preference, kind),
                                float(rng.choice(_RING_AMOUNTS))))
            script.append((int(day), actions))
        users, rows = [], []
        for member in range(ring_size):
            own = None
            while own is None or own.labels["profile"] != "ordinary":
                own = simulate_user(seed, index, max_events)
                index += 1
            member_rng = np.random.default_rng([seed, 1 << 44, ring, member])
            offset = float(member_rng.uniform(0, 3))
            events = list(zip(own.times_ms.tolist(), own.event_type, own.channel, own.device,
                              own.pay_method, own.amount, own.item,
                              strict=True))[:_RING_OWN_EVENTS]
            for session, (session_day, actions) in enumerate(script):
                t = _START_MS + int(((start_day + offset + session_day) * 24
                                     + hour + member_rng.normal(0, 0.3)) * 3_600_000)
                device = "new" if session == new_device else "known"
                events.append((t, "logon", channel, device, "", None, ""))
                for kind, item, amount in actions:
                    t += int(member_rng.uniform(30_000, 90_000))
                    jittered = round(amount * float(1 + member_rng.normal(0, 0.03)), 2)
                    events.append((t, kind, channel, device, pay, jittered, item))
            events.sort(key=lambda e: e[0])
            columns = list(zip(*events, strict=True))
            key = f"ring{ring:03d}-{member:02d}"
            labels = {**own.labels, "is_risk": 1, "takeover": 0, "profile": "fraud_ring"}
            users.append(User(key, labels, np.asarray(columns[0], dtype=np.int64),
                              *[list(c) for c in columns[1:]]))
            rows.append({"user_id": key, "ring": ring})
        yield users, rows


def iter_users(seed: int, num_users: int | None = None, num_events: int | None = None,
               max_events: int = 8000) -> Iterator[User]:
    """Yields users in index order until `num_users` users or `num_events` events."""
    index = events = 0
    while (num_users is None or index < num_users) and (
            num_events is None or events < num_events):
        user = simulate_user(seed, index, max_events)
        events += len(user)
        index += 1
        yield user


class _ShardWriter:
    """Writes blocks of rows to one CSV or Parquet shard."""

    def __init__(self, path: str, fmt: str):
        self.path, self.fmt = path, fmt
        if fmt == "csv":
            self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._csv = csv.writer(self._file)
            self._csv.writerow(COLUMNS)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._pa = pa
            self._schema = pa.schema([(c, pa.float64() if c == "amount" else pa.string())
                                      for c in COLUMNS])
            self._parquet = pq.ParquetWriter(path, self._schema)

    def write(self, rows: list[tuple]) -> None:
        if self.fmt == "csv":
            self._csv.writerows(rows)
            return
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in COLUMNS]
        arrays = {c: list(v) for c, v in zip(COLUMNS, columns, strict=True)}
        arrays["amount"] = [None if a == "" else float(a) for a in arrays["amount"]]
        self._parquet.write_table(self._pa.table(arrays, schema=self._schema))

    def close(self) -> None:
        if self.fmt == "csv":
            self._file.close()
        else:
            self._parquet.close()


def write_dataset(output_dir: str, seed: int = 0, num_users: int | None = None,
                  num_events: int | None = None, fmt: str = "csv", num_shards: int = 4,
                  block_users: int = 256, max_events: int = 8000,
                  num_analogies: int = 0, num_rings: int = 0, ring_size: int = 5) -> dict:
    """Simulates users and writes `events/part-*.{csv,parquet}`, labels and planted events.

    `labels.csv` holds one row per user; `planted_events.csv` the events of each planted
    takeover pattern (`User.planted`).

    With `num_analogies`, the planted quadruples' users follow (`analogy_quadruples`) and
    `analogies.csv` lists them; with `num_rings`, the rings' accounts (`ring_users`), listed
    in `rings.csv`.

    Rows of each block of `block_users` users are shuffled before writing, so files are not
    sorted by user or time (like real logs); blocks go to shards in turn.

    Args:
        output_dir: str. Output folder (created).
        seed: int. Seed; the same seed gives the same files.
        num_users: int or None. Number of users.
        num_events: int or None. Stop after the user that reaches this many events.
        fmt: str. `csv` or `parquet`.
        num_shards: int. Number of event files.
        block_users: int. Users per shuffled block.
        max_events: int. Longest history.
        num_analogies: int. Planted analogy quadruples (4 users each).
        num_rings: int. Planted fraud rings.
        ring_size: int. Accounts per ring.

    Returns:
        A summary: users, events, positives per binary label, longest history, analogies.
    """
    if num_users is None and num_events is None:
        raise ValueError("give num_users or num_events")
    os.makedirs(os.path.join(output_dir, "events"), exist_ok=True)
    writers = [_ShardWriter(os.path.join(output_dir, "events", f"part-{i:05d}.{fmt}"), fmt)
               for i in range(num_shards)]
    summary = {"users": 0, "events": 0, "is_risk": 0, "takeover": 0, "longest": 0,
               "analogies": num_analogies, "rings": num_rings}
    quadruples = list(analogy_quadruples(seed, num_analogies, max_events))
    if quadruples:
        with open(os.path.join(output_dir, "analogies.csv"), "w", newline="",
                  encoding="utf-8") as f:
            writer = csv.DictWriter(f, ANALOGY_COLUMNS)
            writer.writeheader()
            writer.writerows(row for _, row in quadruples)
    rings = list(ring_users(seed, num_rings, ring_size, max_events))
    if rings:
        with open(os.path.join(output_dir, "rings.csv"), "w", newline="",
                  encoding="utf-8") as f:
            writer = csv.DictWriter(f, RING_COLUMNS)
            writer.writeheader()
            writer.writerows(row for _, rows in rings for row in rows)
    planted = (user for group, _ in quadruples + rings for user in group)
    started = time.time()
    with open(os.path.join(output_dir, "labels.csv"), "w", newline="",
              encoding="utf-8") as label_file, \
            open(os.path.join(output_dir, "planted_events.csv"), "w", newline="",
                 encoding="utf-8") as planted_file:
        labels = csv.writer(label_file)
        labels.writerow(LABEL_COLUMNS)
        planted_events = csv.writer(planted_file)
        planted_events.writerow(PLANTED_COLUMNS)
        block, block_index = [], 0
        for user in itertools.chain(iter_users(seed, num_users, num_events, max_events),
                                    planted):
            labels.writerow([user.user_id] + [user.labels[c] for c in LABEL_COLUMNS[1:]])
            planted_events.writerows((user.user_id, _iso_time(t), *rest)
                                     for t, *rest in user.planted)
            block.extend(user.rows())
            summary["users"] += 1
            summary["events"] += len(user)
            summary["is_risk"] += user.labels["is_risk"]
            summary["takeover"] += user.labels["takeover"]
            summary["longest"] = max(summary["longest"], len(user))
            if summary["users"] % block_users == 0:
                _flush(block, block_index, seed, writers)
                block, block_index = [], block_index + 1
                if block_index % 40 == 0:
                    logging.info("%d users, %d events (%.0f events/s)", summary["users"],
                                 summary["events"], summary["events"] / (time.time() - started))
        if block:
            _flush(block, block_index, seed, writers)
    for writer in writers:
        writer.close()
    return summary


def _flush(rows: list, block_index: int, seed: int, writers: list) -> None:
    order = np.random.default_rng([seed, 1 << 40, block_index]).permutation(len(rows))
    writers[block_index % len(writers)].write([rows[i] for i in order])


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command-line flags.

    Called only when the module runs as a script, so that importing it next to other
    tools never defines a flag twice.
    """
    flags.DEFINE_string("output_dir", None, "Folder for events/ and labels.csv.")
    flags.DEFINE_integer("num_users", None, "Number of users to simulate.")
    flags.DEFINE_integer("num_events", None, "Simulate users until this many events.")
    flags.DEFINE_integer("seed", 0, "Seed; the same seed gives the same files.")
    flags.DEFINE_enum("format", "csv", ["csv", "parquet"], "Event file format.")
    flags.DEFINE_integer("num_shards", 4, "Number of event files.")
    flags.DEFINE_integer("max_events", 8000, "Longest history of a user.")
    flags.DEFINE_integer("num_analogies", 0, "Planted analogy quadruples (4 more users each, "
                         "listed in analogies.csv) for the report's sequence analogy.")
    flags.DEFINE_integer("num_rings", 0, "Planted fraud rings (accounts run from one script, "
                         "listed in rings.csv) for similar-user search.")
    flags.DEFINE_integer("ring_size", 5, "Accounts per planted ring.")


def main(argv: list[str]) -> None:
    """Command-line entry point."""
    del argv
    if FLAGS.output_dir is None:
        sys.exit("error: --output_dir is required")
    if FLAGS.num_users is None and FLAGS.num_events is None:
        sys.exit("error: give --num_users or --num_events")
    summary = write_dataset(FLAGS.output_dir, FLAGS.seed, FLAGS.num_users, FLAGS.num_events,
                            FLAGS.format, FLAGS.num_shards, max_events=FLAGS.max_events,
                            num_analogies=FLAGS.num_analogies, num_rings=FLAGS.num_rings,
                            ring_size=FLAGS.ring_size)
    print(f"wrote {summary['events']} events of {summary['users']} users to "
          f"{FLAGS.output_dir} (is_risk: {summary['is_risk']}, takeover: "
          f"{summary['takeover']}, longest history: {summary['longest']}"
          + (f", {summary['analogies']} analogy quadruples" if summary["analogies"] else "")
          + (f", {summary['rings']} rings" if summary["rings"] else "") + ")")


if __name__ == "__main__":
    define_flags()
    app.run(main)
