"""Small file helpers that accept local paths and any filesystem TensorFlow knows (gs://)."""

from __future__ import annotations

import os

from autorisk_tf.data.output_folder import (  # noqa: F401 - exists, is_dir: fileio's API
    OutputFolderError,
    exists,
    is_dir,
    listed_files,
)


def _is_local(path: str) -> bool:
    return "://" not in path


def read_text(path: str) -> str:
    """Returns the UTF-8 text of a file.

    Args:
        path: str. Local path or URL such as `gs://bucket/file`.

    Returns:
        The file's text.
    """
    if _is_local(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    """Writes UTF-8 text to a file, creating its parent directories.

    Args:
        path: str. Local path or URL.
        text: str. The content.
    """
    if _is_local(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    import tensorflow as tf

    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def glob(pattern: str) -> list[str]:
    """The sorted paths matching a glob (local, without importing TensorFlow, or a URL)."""
    if _is_local(pattern):
        import glob as local

        return sorted(local.glob(pattern))
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(pattern))


def join(*parts: str) -> str:
    """Joins path parts with `/` (valid for local paths and URLs)."""
    return "/".join([p.rstrip("/") for p in parts[:-1]] + list(parts[-1:]))


class EmptySplitError(OutputFolderError):
    """A split with no sequences; command lines exit 2 with its one-line message."""


def split_pattern(data: str, split: str) -> str:
    """The shard glob of one split of a `beam.preprocess` output, checked to hold sequences.

    Args:
        data: str. Output folder of beam.preprocess.
        split: str. `train`, `valid` or `test`.

    Returns:
        `<data>/<split>/*.tfrecord`.

    Raises:
        OutputFolderError: the folder has no manifest, or the split's shards are not the
            ones it lists (see `output_folder.listed_files`).
        EmptySplitError: no shard matches, or every shard is empty; the message names the
            split and the folder.
    """
    import tensorflow as tf

    pattern = join(data, split, "*.tfrecord")
    paths = listed_files(data, split, ".tfrecord")
    if not paths:
        raise EmptySplitError(f"split {split!r} of {data} has no shards ({pattern} matches no "
                              "file): is it a beam.preprocess output folder?")
    if all(tf.io.gfile.stat(path).length == 0 for path in paths):
        raise EmptySplitError(f"split {split!r} of {data} is empty: its {len(paths)} shard(s) "
                              "hold no sequences (see the split fractions and the dead "
                              "letters of beam.preprocess)")
    return pattern


def split_patterns_or_exit(data: str, splits: tuple[str, ...]) -> list[str]:
    """For command lines: `split_pattern` of each split, or one error line and exit code 2."""
    import sys

    try:
        return [split_pattern(data, split) for split in splits]
    except OutputFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
