"""Pre-training machinery: configuration, distribution strategy, the training loop."""

from autorisk_tf.training.config import TrainConfig, load_config
from autorisk_tf.training.loop import Pretrainer

__all__ = ["Pretrainer", "TrainConfig", "load_config"]
