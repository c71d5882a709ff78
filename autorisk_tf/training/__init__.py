"""Pre-training machinery: configuration, distribution strategy, the training loop."""

from autorisk_tf.training.config import TrainConfig, load_config
from autorisk_tf.training.loop import CheckpointMismatchError, Pretrainer

__all__ = ["CheckpointMismatchError", "Pretrainer", "TrainConfig", "load_config"]
