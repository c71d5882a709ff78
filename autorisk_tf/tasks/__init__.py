"""Pre-training tasks: masked events, quick thought, random slices, next visit (input, head, loss).

The bag-of-ids task lives in `bag_of_ids` (it reads the masked pass's embedding).
"""

from autorisk_tf.tasks.masked_event import MaskedEventHead, MaskingConfig, mask_events
from autorisk_tf.tasks.next_visit import NextVisitConfig, NextVisitHead, cut_histories
from autorisk_tf.tasks.quick_thought import PairConfig, QuickThoughtHead, split_pairs
from autorisk_tf.tasks.slice_contrastive import (
    SliceConfig,
    SliceContrastiveHead,
    multi_positive_nce,
    sample_slices,
)

__all__ = ["MaskedEventHead", "MaskingConfig", "NextVisitConfig", "NextVisitHead", "PairConfig",
           "QuickThoughtHead", "SliceConfig", "SliceContrastiveHead", "cut_histories",
           "mask_events", "multi_positive_nce", "sample_slices", "split_pairs"]
