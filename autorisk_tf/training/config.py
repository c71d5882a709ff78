"""The pre-training configuration: one YAML file, sections mapped to small dataclasses.

```yaml
model: {width: 128, num_blocks: 3, block_size: 64}      # EncoderConfig
input: {batch_size: 32, seed: 0}                        # InputConfig
masked_event: {rate: 0.15}                              # one section per task
quick_thought: {split: cut, min_length: 4}              # (autorisk_tf.tasks.TASKS)
slice_contrastive: {num_slices: 4, min_fraction: 0.3}
bag_of_ids: {loss: softmax}
next_visit: {min_events: 1}
curriculum: {quick_thought_start: 300, quick_thought_ramp: 200, quick_thought_weight: 0.2,
             slice_contrastive_start: 0, slice_contrastive_weight: 1.0, next_visit_weight: 1.0}
training: {steps: 2000, learning_rate: 0.001, checkpoint_every: 200}
```
Every key is optional; unknown keys are errors that name the section.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Any

import yaml

from autorisk_tf.data import fileio
from autorisk_tf.data.pipeline import InputConfig
from autorisk_tf.layers.sequence_encoder import EncoderConfig
from autorisk_tf.tasks import TASKS

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("adamw", "sgd")


def _ramped(weight: float, start: int | None, ramp: int, step: int) -> float:
    """A task's loss weight at a step: 0 before `start`, then a linear ramp to `weight`."""
    if start is None or step < start:
        return 0.0
    return weight * min(1.0, (step - start + 1) / max(ramp, 1))


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """When each task trains: masked events first, the contrastive tasks joining with a ramp.

    The quick thought defaults are the schedule that gave the best downstream AUC among the
    300-step schedules of `benchmarks/curriculum_bench.py` on simulated data (docs/training.md,
    "Curriculum"). The slice task is off unless a config turns it on.

    Args:
        masked_event_weight: float. Weight of the masked event loss (0 turns it off).
            Defaults to 1.0.
        quick_thought_weight: float. Final weight of the quick thought loss. Defaults to 0.05.
        quick_thought_start: int or None. Step at which quick thought joins; None never.
            Defaults to 100.
        quick_thought_ramp: int. Steps over which its weight grows linearly to the final
            weight. Defaults to 50.
        slice_contrastive_weight: float. Final weight of the random-slice contrastive loss.
            Defaults to 1.0.
        slice_contrastive_start: int or None. Step at which it joins; None never.
            Defaults to None.
        slice_contrastive_ramp: int. Steps of its linear ramp. Defaults to 1.
        bag_of_ids_weight: float. Weight of the bag-of-ids loss (predict each categorical
            field's id distribution from the embedding of the masked-event pass), from the
            first step; 0 turns it off. Defaults to 0.0.
        next_visit_weight: float. Weight of the next-visit loss (predict the first event of
            a random visit from the embedding of the history before it: one more encoder
            pass per step), from the first step; 0 turns it off. Defaults to 0.0.
    """

    masked_event_weight: float = 1.0
    quick_thought_weight: float = 0.05
    quick_thought_start: int | None = 100
    quick_thought_ramp: int = 50
    slice_contrastive_weight: float = 1.0
    slice_contrastive_start: int | None = None
    slice_contrastive_ramp: int = 1
    bag_of_ids_weight: float = 0.0
    next_visit_weight: float = 0.0

    def quick_thought_weight_at(self, step: int) -> float:
        """The quick thought loss weight at a step."""
        return _ramped(self.quick_thought_weight, self.quick_thought_start,
                       self.quick_thought_ramp, step)

    def slice_contrastive_weight_at(self, step: int) -> float:
        """The random-slice contrastive loss weight at a step."""
        return _ramped(self.slice_contrastive_weight, self.slice_contrastive_start,
                       self.slice_contrastive_ramp, step)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimisation, checkpoints and devices (the `training:` section).

    Args:
        steps: int. Total training steps. Defaults to 2000.
        learning_rate: float. Peak learning rate. Defaults to 1e-3.
        warmup_steps: int. Linear warm-up before the cosine decay. Defaults to 100.
        weight_decay: float. Decoupled weight decay (AdamW). Defaults to 0.01.
        clip_norm: float. Global gradient norm clip. Defaults to 1.0.
        checkpoint_every: int. Steps between checkpoints. Defaults to 200.
        log_every: int. Steps between TensorBoard scalars. Defaults to 10.
        precision: str. `float32`, `mixed_float16` (with loss scaling) or
            `mixed_bfloat16`. Defaults to `float32`.
        jit_compile: bool. XLA-compile the encoder. Defaults to False.
        optimizer: str. `adamw`, or `sgd` (plain, no momentum; its update is
            proportional to the gradient, which tests use to check the gradient's scale).
            Defaults to `adamw`.
    """

    steps: int = 2000
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    precision: str = "float32"
    jit_compile: bool = False
    optimizer: str = "adamw"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")


# One section per registered task, between the encoder's and the schedule's.
_SECTIONS = {"model": EncoderConfig, "input": InputConfig,
             **{task.name: task.config_class for task in TASKS},
             "curriculum": CurriculumConfig,
             "training": OptimConfig}


def _check_sections(self) -> None:
    if self.bag_of_ids.separate_ids and "ids" not in self.model.pooling:
        raise ValueError("bag_of_ids.separate_ids needs `ids` in model.pooling, got "
                         f"{list(self.model.pooling)}")


def _to_dict(self) -> dict:
    """Plain dict (YAML-ready) of every section."""
    return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in _SECTIONS}


# A frozen dataclass with one field per section, so that a task registered in
# `autorisk_tf.tasks.TASKS` gets its section without an edit here.
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig",
    [(name, cls, dataclasses.field(default_factory=cls)) for name, cls in _SECTIONS.items()],
    frozen=True,
    namespace={"__doc__": "The whole pre-training configuration (one dataclass per YAML "
                          "section: `config.model`, `config.masked_event`, ...).",
               "__module__": __name__, "__post_init__": _check_sections,
               "to_dict": _to_dict})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


# Counts and sizes with their least value (below it a run would fail deep in TensorFlow, or
# train nothing and exit 0); `training.steps` 0 saves the encoder's initial weights.
MINIMUM = {"input.batch_size": 1, "training.steps": 0, "training.checkpoint_every": 1,
           "training.log_every": 1, "model.width": 1, "model.num_blocks": 1,
           "model.block_size": 1, "model.num_heads": 1}


def _checked(where: str, value: Any, default: Any) -> Any:
    """A config value checked against the type of its default (ints become floats)."""
    if value is None or default is None or default is dataclasses.MISSING:
        return value
    wanted = (bool if isinstance(default, bool) else int if isinstance(default, int)
              else float if isinstance(default, float) else str if isinstance(default, str)
              else (list, tuple) if isinstance(default, list | tuple) else None)
    if wanted is None:
        return value
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        kind = wanted.__name__ if isinstance(wanted, type) else "list"
        raise ValueError(f"{where} must be {kind}, got {value!r}")
    if where in MINIMUM and value < MINIMUM[where]:
        raise ValueError(f"{where} must be at least {MINIMUM[where]}, got {value}")
    return value


def config_from_dict(values: dict) -> TrainConfig:
    """Builds a TrainConfig from nested dicts, naming any unknown section or key.

    Raises:
        ValueError: an unknown section or key, or a value of the wrong type or range.
    """
    unknown = sorted(set(values) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        section = values.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{name}: must be a mapping of keys, got {section!r}")
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        bad = sorted(set(section) - set(fields))
        if bad:
            raise ValueError(f"{name}: unknown key(s) {bad}; known: {sorted(fields)}")
        sections[name] = cls(**{key: _checked(f"{name}.{key}", value, fields[key])
                                for key, value in section.items()})
    return TrainConfig(**sections)


def _read_values(path: str, chain: tuple[str, ...] = ()) -> dict:
    """The sections of a YAML config, with those of the config it `extends` beneath them.

    Args:
        path: str. YAML file. A top-level `extends: other.yaml` (a path relative to this
            file's folder) reads that config first; this file's keys then replace its keys,
            section by section.
        chain: tuple of str. The configs that extend this one (to refuse a cycle).

    Returns:
        `{section: {key: value}}`.
    """
    try:
        values = yaml.safe_load(fileio.read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where}: "
                         f"{getattr(e, 'problem', None) or e}") from None
    values = values or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config must be a mapping of sections")
    base = values.pop("extends", None)
    if base is None:
        return values
    base_path = base
    if not (posixpath.isabs(base) or "://" in base):
        base_path = posixpath.join(posixpath.dirname(path), base)
        if "://" not in base_path:  # `..` resolved, so that a cycle shows as a repeated path
            base_path = posixpath.normpath(base_path)
    if base_path in chain + (path,):
        raise ValueError(f"{path}: `extends` makes a cycle: {' -> '.join(chain + (path,))}")
    merged = _read_values(base_path, chain + (path,))
    for section, keys in values.items():
        merged[section] = {**(merged.get(section) or {}), **(keys or {})}
    return merged


def load_config(path: str | None, overrides: dict | None = None) -> TrainConfig:
    """Reads a YAML config (or the defaults) and applies `section.key` overrides.

    Args:
        path: str or None. YAML file; None for the defaults. It may start from another
            config with `extends: other.yaml` (relative to its folder).
        overrides: dict or None. `{"training.steps": 100, ...}`, applied last.

    Returns:
        The TrainConfig.
    """
    values = _read_values(path) if path else {}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        values.setdefault(section, {})
        values[section] = {**(values[section] or {}), key: value}
    return config_from_dict(values)
