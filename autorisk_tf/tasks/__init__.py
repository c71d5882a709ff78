"""Pre-training tasks: each module holds a task's inputs, head, loss and its `Task` class.

`TASKS` is the registry the training loop and the config read: a new task is one module
with a `Task` subclass (`autorisk_tf.tasks.base`) plus one line here. The order is the
order of the heads' variables in a checkpoint; append new tasks at the end.
"""

from autorisk_tf.tasks.bag_of_ids import BagConfig, BagOfIdsHead, BagOfIdsTask
from autorisk_tf.tasks.base import StepContext, Task
from autorisk_tf.tasks.masked_event import (
    MaskedEventHead,
    MaskedEventTask,
    MaskingConfig,
    mask_events,
)
from autorisk_tf.tasks.next_visit import (
    NextVisitConfig,
    NextVisitHead,
    NextVisitTask,
    cut_histories,
)
from autorisk_tf.tasks.quick_thought import (
    PairConfig,
    QuickThoughtHead,
    QuickThoughtTask,
    split_pairs,
)
from autorisk_tf.tasks.slice_contrastive import (
    SliceConfig,
    SliceContrastiveHead,
    SliceContrastiveTask,
    multi_positive_nce,
    sample_slices,
)

TASKS: tuple[type[Task], ...] = (
    MaskedEventTask,
    QuickThoughtTask,
    SliceContrastiveTask,
    BagOfIdsTask,
    NextVisitTask,
)

__all__ = ["TASKS", "BagConfig", "BagOfIdsHead", "MaskedEventHead", "MaskingConfig",
           "NextVisitConfig", "NextVisitHead", "PairConfig", "QuickThoughtHead", "SliceConfig",
           "SliceContrastiveHead", "StepContext", "Task", "cut_histories", "mask_events",
           "multi_positive_nce", "sample_slices", "split_pairs"]
