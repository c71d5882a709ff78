"""The task registry: the loop trains whatever `autorisk_tf.tasks.TASKS` holds."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from autorisk_tf.tasks import TASKS, Task
from autorisk_tf.training import load_config
from autorisk_tf.training.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT = os.path.join(ROOT, "tests", "data", "checkpoint_layout.json")

# The config `tests/data/checkpoint_layout.json` was written with, by the loop as it was
# before tasks were registered (every task and head on: both bag decoders, next visit).
EVERY_HEAD = {"model.width": 16, "model.num_blocks": 1, "model.ffn_dim": 16,
              "model.block_size": 8, "model.text_dim": 8,
              "model.pooling": ["mean", "attention", "ids"], "model.ids_dim": 8,
              "model.ids_weighting": "idf", "quick_thought.projection_dim": 8,
              "slice_contrastive.projection_dim": 8, "curriculum.slice_contrastive_start": 0,
              "curriculum.bag_of_ids_weight": 1.0, "bag_of_ids.separate_ids": True,
              "curriculum.next_visit_weight": 1.0}


def test_every_registered_task_has_its_config_section_in_order():
    names = [task.name for task in TASKS]
    assert names == ["masked_event", "quick_thought", "slice_contrastive", "bag_of_ids",
                     "next_visit"]
    config = load_config(None, {"next_visit.min_events": 3})
    assert list(config.to_dict()) == ["model", "input", *names, "curriculum", "training"]
    for task in TASKS:
        assert issubclass(task, Task)
        assert isinstance(getattr(config, task.name), task.config_class)
    assert config.next_visit.min_events == 3
    assert isinstance(config, TrainConfig)
    with pytest.raises(ValueError, match="unknown config section"):
        load_config(None, {"no_such_task.weight": 1.0})


def test_checkpoints_keep_the_layout_written_before_tasks_were_registered(
        pretraining_data, tmp_path):
    """Same variable paths and shapes (the optimizer's slots are indexed by position), so a
    checkpoint written by the previous loop restores (checked by hand on a trained one)."""
    import tensorflow as tf

    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer

    trainer = Pretrainer(Artifacts.load(f"{pretraining_data}/artifacts"),
                         load_config(None, EVERY_HEAD), str(tmp_path / "run"))
    path = trainer.checkpoint.write(str(tmp_path / "ckpt" / "ckpt"))
    layout = {name: list(shape) for name, shape in tf.train.list_variables(path)}
    with open(LAYOUT, encoding="utf-8") as f:
        expected = json.load(f)
    assert layout == expected


TOY_TASK = '''
"""A task the library does not know: predict log(1 + events) from the embedding."""
import dataclasses

import keras
import tensorflow as tf

from autorisk_tf.tasks.base import Task


@dataclasses.dataclass(frozen=True)
class LengthConfig:
    weight: float = 0.0


class LengthTask(Task):
    name = "sequence_length"
    config_class = LengthConfig
    progress_metrics = ("length/loss",)

    def build_heads(self, dtype):
        head = keras.layers.Dense(1, name="length_head")
        head.build((None, self.encoder.embedding_dim))
        return {"length_head": head}

    @property
    def enabled(self):
        return self.settings.weight > 0

    def weight_at(self, step):
        return self.settings.weight

    def make_inputs(self, ids, seed):
        events = tf.reduce_sum(tf.cast(ids["padding_mask"], tf.float32), axis=1)
        return {"log_length": tf.math.log1p(events)}

    def loss_and_metrics(self, context):
        # Reads the masked-event pass: shared with that task when both train.
        embedding = context.encoded("masked")["embedding"]
        error = self.heads["length_head"](embedding)[:, 0] - context.example["log_length"]
        loss = tf.reduce_sum(tf.square(error)) / context.global_batch
        return loss, {"length/loss": loss}
'''

TRAIN_WITH_TOY = '''
import json, sys
sys.path.insert(0, sys.argv[1])
import autorisk_tf.tasks as tasks
from toy_task import LengthTask
tasks.TASKS = (*tasks.TASKS, LengthTask)  # the one registry line
from autorisk_tf.data.artifacts import Artifacts
from autorisk_tf.training import Pretrainer, load_config

config = load_config(sys.argv[2])
data, run = sys.argv[3], sys.argv[4]
trainer = Pretrainer(Artifacts.load(data + "/artifacts"), config, run)
final = trainer.fit(data + "/train/*.tfrecord", verbose=0)
again = Pretrainer(Artifacts.load(data + "/artifacts"), config, run)
print(json.dumps({"losses": [h["length/loss"] for h in trainer.history],
                  "final": sorted(final), "heads": list(trainer.heads),
                  "restored": again.restore(),
                  "config": again.config.to_dict()["sequence_length"]}))
'''


def test_a_new_task_is_one_module_and_one_registry_line(pretraining_data, tmp_path):
    (tmp_path / "toy_task.py").write_text(TOY_TASK, encoding="utf-8")
    (tmp_path / "train.py").write_text(TRAIN_WITH_TOY, encoding="utf-8")
    (tmp_path / "config.yaml").write_text(textwrap.dedent("""\
        model: {width: 16, num_blocks: 1, ffn_dim: 16, block_size: 8, text_dim: 8,
                dropout: 0.0}
        input: {batch_size: 32, bucket_boundaries: [64, 256]}
        sequence_length: {weight: 1.0}
        curriculum: {masked_event_weight: 0.0, quick_thought_start: null}
        training: {steps: 40, warmup_steps: 2, learning_rate: 0.05, checkpoint_every: 20}
        """), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(tmp_path / "train.py"), str(tmp_path),
         str(tmp_path / "config.yaml"), pretraining_data, str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heads"][-1] == "length_head"
    assert out["config"] == {"weight": 1.0}
    assert "length/loss" in out["final"] and "mlm/loss" not in out["final"]
    losses = out["losses"]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    assert out["restored"] == 40
