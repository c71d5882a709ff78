"""train, embed, finetune and evaluate on an empty or missing split: exit 2, one line."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hollow(simulated, tmp_path_factory):
    """A copy of a preprocessed folder whose train split has only empty shards and whose
    test split is missing."""
    data = tmp_path_factory.mktemp("hollow") / "out"
    shutil.copytree(simulated.output_dir, data)
    for name in os.listdir(data / "train"):
        (data / "train" / name).write_bytes(b"")
    shutil.rmtree(data / "test")
    from autorisk_tf.data.output_folder import write_manifest

    write_manifest(str(data))  # as a job that wrote these splits would have
    return str(data)


def _run(*args):
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result.returncode, lines, result.stderr


@pytest.mark.parametrize("command, split", [
    (["autorisk_tf.train", "--model_dir", "{tmp}/run"], "train"),
    (["autorisk_tf.embed", "--model_dir", "{tmp}/run", "--split", "test", "--output",
      "{tmp}/emb"], "test"),
    (["autorisk_tf.finetune", "--model_dir", "{tmp}/run", "--label", "is_risk",
      "--output_dir", "{tmp}/ft"], "train"),
    (["autorisk_tf.evaluate", "--model_dir", "{tmp}/run", "--labels", "is_risk"], "train"),
])
def test_empty_or_missing_split_exits_2_naming_it(hollow, tmp_path, command, split):
    args = [a.format(tmp=tmp_path) for a in command] + ["--data", hollow]
    code, errors, stderr = _run(*args)
    assert code == 2, stderr[-2000:]
    assert len(errors) == 1 and f"split '{split}'" in errors[0] and hollow in errors[0]
    assert "Traceback" not in stderr
