"""Pre-training tasks: masked events, quick thought, random slices (input, head and loss)."""

from autorisk_tf.tasks.masked_event import MaskedEventHead, MaskingConfig, mask_events
from autorisk_tf.tasks.quick_thought import PairConfig, QuickThoughtHead, split_pairs
from autorisk_tf.tasks.slice_contrastive import (
    SliceConfig,
    SliceContrastiveHead,
    multi_positive_nce,
    sample_slices,
)

__all__ = ["MaskedEventHead", "MaskingConfig", "PairConfig", "QuickThoughtHead",
           "SliceConfig", "SliceContrastiveHead", "mask_events", "multi_positive_nce",
           "sample_slices", "split_pairs"]
