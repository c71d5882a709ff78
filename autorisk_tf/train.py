"""Pre-trains an encoder on preprocessed sequences (masked events, then quick thought).

  python -m autorisk_tf.train --config pretrain.yaml --data out/ --model_dir runs/x \
      [--steps 2000] [--batch_size 32] [--mixed_precision bfloat16] [--jit_compile] \
      [--set model.width=256 --set curriculum.quick_thought_start=500]

Rerunning the same command after a crash resumes from the last checkpoint. Under TF_CONFIG
every worker runs the same command (MultiWorkerMirroredStrategy); see BUILD.md.
"""

from __future__ import annotations

import json
import sys

import yaml
from absl import app, flags, logging

from autorisk_tf.cli import require_flags
from autorisk_tf.data import fileio

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command-line flags.

    Called only when the module runs as a script, so that importing it next to other
    tools never defines a flag twice.
    """
    flags.DEFINE_string("config", None, "YAML config (sections model, input, masked_event, "
                        "quick_thought, curriculum, training); defaults when omitted.")
    flags.DEFINE_string("data", None, "Output folder of beam.preprocess (train/, valid/, "
                        "artifacts/).")
    flags.DEFINE_string("model_dir", None, "Checkpoints, logs and encoder.keras go here.")
    flags.DEFINE_integer("steps", None, "Overrides training.steps.")
    flags.DEFINE_integer("batch_size", None, "Overrides input.batch_size (global batch).")
    flags.DEFINE_float("learning_rate", None, "Overrides training.learning_rate.")
    flags.DEFINE_integer("checkpoint_every", None, "Overrides training.checkpoint_every.")
    flags.DEFINE_integer("seed", None, "Overrides input.seed.")
    flags.DEFINE_enum("mixed_precision", None, ["none", "float16", "bfloat16"],
                      "Overrides training.precision: float16 (with loss scaling) or bfloat16.")
    flags.DEFINE_bool("jit_compile", None, "Overrides training.jit_compile (XLA).")
    flags.DEFINE_multi_string("set", [], "Any other override, as section.key=value (YAML value).")
    flags.DEFINE_integer("eval_batches", 20, "Validation batches evaluated after training "
                         "(0 for none).")
    flags.DEFINE_integer("verbose", 1, "1: progress bar; 0: quiet.")


def overrides_from_flags() -> dict:
    """The `section.key` overrides the flags ask for."""
    overrides = {}
    for flag, key in (("steps", "training.steps"), ("batch_size", "input.batch_size"),
                      ("learning_rate", "training.learning_rate"),
                      ("checkpoint_every", "training.checkpoint_every"),
                      ("seed", "input.seed"), ("jit_compile", "training.jit_compile")):
        if FLAGS[flag].value is not None:
            overrides[key] = FLAGS[flag].value
    if FLAGS.mixed_precision is not None:
        overrides["training.precision"] = ("float32" if FLAGS.mixed_precision == "none"
                                           else f"mixed_{FLAGS.mixed_precision}")
    for item in FLAGS.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {item!r}: the value is not valid YAML") from None
    return overrides


def pretrain(data: str, model_dir: str, config: str | None = None,
             overrides: dict | None = None, eval_batches: int = 20, verbose: int = 1) -> dict:
    """Pre-trains (or resumes) an encoder on a `beam.preprocess` output folder.

    What `python -m autorisk_tf.train` runs, callable from a notebook.

    Args:
        data: str. Output folder of beam.preprocess (train/, valid/, artifacts/).
        model_dir: str. Checkpoints, logs, `encoder.keras` and `metrics.json` go here.
        config: str or None. YAML config; None for the defaults.
        overrides: dict or None. `{"training.steps": 100, ...}`, applied last.
        eval_batches: int. Validation batches evaluated after training (0 for none; none
            either when the valid split is empty, with a note on stderr).
        verbose: int. 1 for progress on the chief, 0 for none.

    Returns:
        The last step's metrics, plus `valid/<metric>` of the held-out evaluation.

    Raises:
        fileio.OutputFolderError: `data` is not a complete output folder, or its train
            split is empty.
        ValueError: a bad config, or `model_dir` is a file.
        CheckpointMismatchError: `model_dir` holds a checkpoint of another model.
    """
    from autorisk_tf.data.artifacts import Artifacts
    from autorisk_tf.training import Pretrainer, load_config

    if fileio.exists(model_dir) and not fileio.is_dir(model_dir):
        raise ValueError(f"--model_dir {model_dir} is a file, not a folder")
    train = fileio.split_pattern(data, "train")
    valid = None
    if eval_batches:
        try:
            valid = fileio.split_pattern(data, "valid")
        except fileio.EmptySplitError as e:
            print(f"note: no validation after training: {e}", file=sys.stderr)
    trainer = Pretrainer(Artifacts.load(fileio.join(data, "artifacts")),
                         load_config(config, overrides), model_dir)
    metrics = trainer.fit(train, verbose=verbose)
    if trainer.is_chief and valid:
        metrics.update({f"valid/{k}": v for k, v in
                        trainer.evaluate(valid, eval_batches).items()})
    if trainer.is_chief:
        fileio.write_text(fileio.join(model_dir, "metrics.json"),
                          json.dumps(metrics, indent=1) + "\n")
    metrics["step"] = trainer.step
    return metrics


def main(argv) -> None:
    """Entry point of the command line (absl flags)."""
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint saver logs at INFO
    require_flags("data", "model_dir")
    from autorisk_tf.training import CheckpointMismatchError

    try:
        metrics = pretrain(FLAGS.data, FLAGS.model_dir, FLAGS.config, overrides_from_flags(),
                           FLAGS.eval_batches, FLAGS.verbose)
    except fileio.OutputFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, TypeError, OSError, CheckpointMismatchError) as e:
        sys.exit(f"error: {e}")
    for name, value in sorted(metrics.items()):
        if name.startswith("valid/"):
            print(f"{name:<40} {value:.4f}")
    print(f"step {metrics['step']}: wrote {FLAGS.model_dir}/encoder.keras")


if __name__ == "__main__":
    define_flags()
    app.run(main)
