"""Shared helpers: write small raw tables, run the Beam job on them, read what it wrote."""

import contextlib
import glob
import json
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the cores: one kernel thread each instead of one per core in
    # each (set before TensorFlow or a BLAS starts; subprocesses of tests inherit it).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SCHEMA = """\
key: user_id
timestamp: {column: ts, format: auto}
fields:
  - {name: event_type, kind: categorical, max_vocab: 3, min_count: 1}
  - {name: amount, kind: numeric, num_buckets: 4}
  - {name: item, kind: text, tokenizer: char, max_tokens: 8, min_count: 1}
labels:
  columns:
    - {name: is_risk, kind: binary}
    - {name: band, kind: categorical}
"""


class Run:
    """What one preprocessing run wrote."""

    def __init__(self, output_dir, schema_path):
        from autorisk_tf.data import artifacts, reader

        self.output_dir = output_dir
        self.artifacts = artifacts.Artifacts.load(os.path.join(output_dir, "artifacts"))
        self.stats = self.artifacts.stats
        self.examples = {}
        for split in ("train", "valid", "test"):
            pattern = os.path.join(output_dir, split, "*.tfrecord")
            if glob.glob(pattern):
                for ex in reader.read_sequences(pattern, self.artifacts.schema):
                    ex["split"] = split
                    self.examples.setdefault(ex["key"], []).append(ex)
        for windows in self.examples.values():
            windows.sort(key=lambda ex: ex["window_index"])
        self.dead_letters = []
        for path in sorted(glob.glob(os.path.join(output_dir, "dead_letter", "*.jsonl"))):
            with open(path, encoding="utf-8") as f:
                self.dead_letters.extend(json.loads(line) for line in f if line.strip())

    def one(self, key):
        (example,) = self.examples[key]
        return example


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Seeds Python, numpy and Keras before every test.

    Layers built without an explicit seed draw their weights from the global generators, so
    without this a test's values depend on which tests ran before it in the same worker
    (CI saw a quick-thought loss of 0.109 against a floor of 0.1 that seeds 0-19 all meet).
    """
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture
def preprocess(tmp_path):
    """Returns run(files, schema=SCHEMA, args=()) -> Run, over files written to tmp_path."""
    from beam import preprocess as job

    counter = [0]

    def run(files, schema=SCHEMA, labels=None, args=(), input_glob=None):
        counter[0] += 1
        root = tmp_path / f"run{counter[0]}"
        (root / "in").mkdir(parents=True)
        for name, content in files.items():
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(root / "in" / name, mode, **({} if mode == "wb" else
                                                  {"encoding": "utf-8", "newline": ""})) as f:
                f.write(content)
        (root / "schema.yaml").write_text(schema, encoding="utf-8")
        argv = ["--input", input_glob or str(root / "in" / "*"),
                "--schema", str(root / "schema.yaml"), "--output_dir", str(root / "out"),
                *args]
        if labels is not None:
            (root / "labels.csv").write_text(labels, encoding="utf-8")
            argv += ["--labels", str(root / "labels.csv")]
        job.run(argv)
        return Run(str(root / "out"), str(root / "schema.yaml"))

    return run


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


SIMULATED_SCHEMA = os.path.join(os.path.dirname(__file__), os.pardir, "autorisk_tf", "schemas",
                                "simulated.yaml")


def _simulate_and_preprocess(root, num_users, num_analogies=0, seed=5, num_rings=0):
    """Simulates users under root/raw and preprocesses them (max_len 256)."""
    from autorisk_tf import simulate
    from beam import preprocess as job

    simulate.write_dataset(str(root / "raw"), seed=seed, num_users=num_users, num_shards=2,
                           num_analogies=num_analogies, num_rings=num_rings)
    job.run(["--input", str(root / "raw" / "events" / "*.csv"), "--schema", SIMULATED_SCHEMA,
             "--labels", str(root / "raw" / "labels.csv"), "--output_dir", str(root / "out"),
             "--max_len", "256"])
    return str(root / "out")


@pytest.fixture(scope="session")
def simulated(tmp_path_factory):
    """400 simulated users (seed 5), preprocessed with `max_len 256`: a `Run`."""
    return Run(_simulate_and_preprocess(tmp_path_factory.mktemp("simulated"), 400),
               SIMULATED_SCHEMA)


SMALL = os.path.join(os.path.dirname(__file__), os.pardir, "autorisk_tf", "configs",
                     "small.yaml")


@pytest.fixture(scope="session")
def pretraining_data(tmp_path_factory):
    """1,500 simulated users (seed 5), preprocessed with max_len 256: the output folder."""
    return _simulate_and_preprocess(tmp_path_factory.mktemp("pretraining"), 1500)


def pytest_collection_modifyitems(config, items):
    """Orders the files so that two processes (`pytest -n 2 --dist loadfile`) rarely wait.

    `test_training.py` first: its process trains the session's encoder (`pretrained`) at
    once, while the other process runs the files that do not need it; the other files that
    need it come last, when it is trained, `test_report.py` (the longest of them, about a
    tenth of the suite) first among them so that the shorter ones even out the end. The
    order within a file is kept.
    """
    needs = {item.path for item in items if "pretrained" in item.fixturenames}

    def rank(item):
        if item.path.name == "test_training.py":
            return 0
        if item.path in needs:
            return 2 if item.path.name == "test_report.py" else 3
        return 1

    items.sort(key=rank)


@contextlib.contextmanager
def _run_lock(name, tmp_path_factory):
    """A folder shared by the `pytest -n` workers of this run, held under an exclusive lock.

    Yields the folder, or None in a plain (single-process) run.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_id:
        yield None
        return
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / f"{name}-{run_id}"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared


@pytest.fixture(scope="session")
def pretrained(pretraining_data, tmp_path_factory):
    """The small config trained for its 300 steps: (trainer, random-weight embedder).

    Under `pytest -n` the first worker that needs it trains it; the others wait, copy its
    folder and restore the last checkpoint (the data is the same: same seed, same job).
    """
    import shutil

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer, load_config

    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    run = tmp_path_factory.mktemp("run")
    with _run_lock("pretrained", tmp_path_factory) as shared:
        trained = shared and shared / "run"
        if trained and trained.exists():
            shutil.copytree(trained, run, dirs_exist_ok=True)
        trainer = Pretrainer(artifacts, load_config(SMALL), str(run))
        trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)  # restores, if copied
        if trained and not trained.exists():
            shutil.copytree(run, trained)
    untrained = Pretrainer(artifacts, load_config(SMALL, {"input.seed": 1}),
                           str(tmp_path_factory.mktemp("untrained")))
    return trainer, untrained.embedder()


SERVING_SCHEMA = """\
key: user_id
timestamp: {column: ts, format: epoch_ms}
fields:
  - {name: event_type, kind: categorical, max_vocab: 3, min_count: 1}
  - {name: amount, kind: numeric, num_buckets: 4, log: true}
  - {name: amount_by_type, column: amount, kind: numeric, num_buckets: 4, log: true,
     bucket_by: event_type, min_count: 40, continuous: true}
  - {name: item, kind: text, tokenizer: char, max_tokens: 6, min_count: 1}
  - {name: tags, kind: categorical, separator: "|", max_values: 3, max_vocab: 4,
     hash_buckets: 8}
time_features: {delta_buckets: 16, hour: true, day_of_week: true, utc_offset_hours: 2,
                age_buckets: 12}
labels:
  columns:
    - {name: is_risk, kind: binary}
"""
SERVING_MAX_LEN = 12


def serving_rows(num_users=40, seed=3):
    """Raw event rows (dicts of CSV cells) of users made to test serving.

    Lengths 1 to 30 (many over `SERVING_MAX_LEN`), six event types (three are out of the
    vocabulary), zero to four tags per event (some empty, some out of the vocabulary, some
    past `max_values`), missing cells in every field, tied timestamps, rows not in time
    order.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        t = 1_767_225_600_000 + int(rng.integers(0, 10**9))
        for _ in range(int(rng.integers(1, 31))):
            t += int(rng.choice([0, 1_000, 60_000, 7_200_000, 90_000_000]))
            rows.append({
                "user_id": f"u{user:03d}", "ts": str(t),
                "event_type": "" if rng.random() < 0.1 else f"t{int(rng.integers(0, 6))}"
                if rng.random() < 0.3 else f"t{int(rng.integers(0, 2))}",
                "amount": "" if rng.random() < 0.15 else f"{rng.lognormal(3, 1):.2f}",
                "item": "" if rng.random() < 0.2 else "".join(
                    rng.choice(list("abcdefgh"), int(rng.integers(1, 9)))),
                "tags": "|".join(rng.choice(["x", "y", "z", "w", "v", "u", ""],
                                            int(rng.integers(0, 5))))})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


class Exported:
    """A tiny model trained on `serving_rows`, exported as version 1 of `autorisk`."""

    def __init__(self, root):
        import csv

        from autorisk_tf.data.artifacts import Artifacts
        from autorisk_tf.training import Pretrainer, load_config
        from beam import preprocess as job
        from export import savedmodel

        self.rows = serving_rows()
        raw = root / "events.csv"
        with open(raw, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        (root / "schema.yaml").write_text(SERVING_SCHEMA, encoding="utf-8")
        users = sorted({row["user_id"] for row in self.rows})
        (root / "labels.csv").write_text("user_id,is_risk\n" + "".join(
            f"{u},{i % 2}\n" for i, u in enumerate(users)), encoding="utf-8")
        self.data = str(root / "data")
        job.run(["--input", str(raw), "--schema", str(root / "schema.yaml"),
                 "--labels", str(root / "labels.csv"), "--output_dir", self.data,
                 "--max_len", str(SERVING_MAX_LEN), "--split", "0.5,0.25,0.25"])
        self.artifacts = Artifacts.load(f"{self.data}/artifacts")
        self.schema = self.artifacts.schema
        self.model_dir = str(root / "run")
        config = load_config(None, {
            "model.width": 16, "model.num_blocks": 1, "model.ffn_dim": 32,
            "model.block_size": 4, "model.num_heads": 2, "model.num_global": 1,
            "model.field_dim": 8, "model.text_dim": 8, "input.batch_size": 8,
            # the `ids` and `state` poolings too, so the export and serving tests cover
            # their ops
            "model.pooling": ["mean", "attention", "ids", "state"], "model.ids_dim": 8,
            "input.bucket_boundaries": [8], "training.steps": 2,
            "training.warmup_steps": 1, "training.checkpoint_every": 100})
        trainer = Pretrainer(self.artifacts, config, self.model_dir)
        trainer.fit(f"{self.data}/train/*.tfrecord", verbose=0)
        self.base = str(root / "models" / "autorisk")
        self.version_dir = savedmodel.export(self.model_dir, self.base)

    def request(self, keys):
        """The `serving_default` inputs of some users, from their raw rows."""
        from export.client import instances_from_rows, to_columns

        _, instances = instances_from_rows(
            [row for row in self.rows if row["user_id"] in set(keys)], self.schema,
            order=list(keys))
        return to_columns(instances)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """An `Exported` model (session-wide: tests must not change its folders)."""
    return Exported(tmp_path_factory.mktemp("exported"))
