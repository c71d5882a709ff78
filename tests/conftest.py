"""Shared helpers: write small raw tables, run the Beam job on them, read what it wrote."""

import glob
import json
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


SIMULATED_SCHEMA = os.path.join(os.path.dirname(__file__), os.pardir, "autorisk_tf", "schemas",
                                "simulated.yaml")


def _simulate_and_preprocess(root, num_users):
    """Simulates users (seed 5) under root/raw and preprocesses them (max_len 256)."""
    from autorisk_tf import simulate
    from beam import preprocess as job

    simulate.write_dataset(str(root / "raw"), seed=5, num_users=num_users, num_shards=2)
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


@pytest.fixture(scope="session")
def pretrained(pretraining_data, tmp_path_factory):
    """The small config trained for its 300 steps: (trainer, random-weight embedder)."""
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer, load_config

    artifacts = Artifacts.load(f"{pretraining_data}/artifacts")
    trainer = Pretrainer(artifacts, load_config(SMALL), str(tmp_path_factory.mktemp("run")))
    untrained = Pretrainer(artifacts, load_config(SMALL, {"input.seed": 1}),
                           str(tmp_path_factory.mktemp("untrained")))
    trainer.fit(f"{pretraining_data}/train/*.tfrecord", verbose=0)
    return trainer, untrained.embedder()
