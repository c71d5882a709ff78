"""The evaluation report: `python -m autorisk_tf.report` (see `__main__`)."""
