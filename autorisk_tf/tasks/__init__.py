"""Pre-training tasks: masked event modelling and quick thought (input transform, head, loss)."""

from autorisk_tf.tasks.masked_event import MaskedEventHead, MaskingConfig, mask_events
from autorisk_tf.tasks.quick_thought import PairConfig, QuickThoughtHead, split_pairs

__all__ = ["MaskedEventHead", "MaskingConfig", "PairConfig", "QuickThoughtHead", "mask_events",
           "split_pairs"]
