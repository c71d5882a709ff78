"""Quiet by default: Beam logs warnings only unless --verbose; no progress bar in a log file."""

import io
import logging

import pytest

from autorisk_tf.training.loop import ProgressReport
from beam import embed, features, preprocess


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_line_every_5_percent_when_stdout_is_not_a_terminal():
    out = io.StringIO()
    report = ProgressReport(45, stream=out)
    for step in range(1, 46):
        report.update(step, {"loss": 1.0 / step})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and report.bar is None
    assert lines[0] == "step 2/45 loss 0.5000" and lines[-1] == "step 45/45 loss 0.0222"
    assert len(lines) == 45 // 2 + 1  # every 2nd step (45 // 20), then the last
    assert ProgressReport(10, stream=_Terminal()).bar is not None  # Keras' bar on a terminal


@pytest.mark.parametrize("job", [preprocess, features, embed])
def test_beam_jobs_log_warnings_only_unless_verbose(job):
    assert "--verbose" in job.build_parser().format_help()
    root = logging.getLogger()
    before = root.level
    try:
        preprocess.set_log_level(["--input", "x", "--verbose"])
        assert root.level == logging.INFO
        preprocess.set_log_level(["--input", "x", "--runner", "X"])
        assert root.level == logging.WARNING
    finally:
        root.setLevel(before)
