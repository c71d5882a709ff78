"""Output folders that a job owns: written whole or not at all, read only as written.

A job (`beam.preprocess`, `beam.features`) claims its output folder before it starts: a
folder that already holds files is an error unless the job was told to overwrite it. A local
job writes into a hidden staging folder beside the output and moves it into place once it has
succeeded, so a killed run leaves the previous output as it was; on an object store (`gs://`)
the job writes in place. Either way the last file written is the manifest, `_SUCCESS`, which
lists every file with its size and SHA-256. Readers require the manifest and check that the
files they are about to read are exactly the ones it lists, so a half-written folder or stale
shards beside a finished run are refused with one line instead of being read twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

MANIFEST = "_SUCCESS"
_CHUNK = 2**20


class OutputFolderError(ValueError):
    """An output folder that may not be written, or may not be read; one-line message."""


def _is_local(path: str) -> bool:
    return "://" not in path


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _files_under(folder: str) -> list[str]:
    """Every file under a folder, as paths relative to it (sorted, `/`-separated)."""
    if _is_local(folder):
        found = [os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                 for root, _, names in os.walk(folder) for name in names]
    else:
        gfile = _gfile()
        found = [os.path.relpath(os.path.join(root, name), folder)
                 for root, _, names in gfile.walk(folder) for name in names]
    return sorted(found)


def is_dir(path: str) -> bool:
    """Whether a path is a folder (local path or URL)."""
    return os.path.isdir(path) if _is_local(path) else _gfile().isdir(path)


def exists(path: str) -> bool:
    """Whether a file or folder exists (local path or URL)."""
    return os.path.exists(path) if _is_local(path) else _gfile().exists(path)


def _remove_tree(path: str) -> None:
    if _is_local(path):
        shutil.rmtree(path)
    else:
        _gfile().rmtree(path)


def staging_folder(output_dir: str) -> str:
    """Where a job writes before its output is published.

    Args:
        output_dir: str. The job's output folder.

    Returns:
        For a local folder, a hidden sibling `.<name>.staging`; for an object store, the
        output folder itself (the manifest, written last, marks it complete).
    """
    output_dir = output_dir.rstrip("/")
    if not _is_local(output_dir):
        return output_dir
    parent, name = os.path.split(os.path.abspath(output_dir))
    return os.path.join(parent, f".{name}.staging")


def claim(output_dir: str, overwrite: bool) -> str:
    """Checks that a job may write its output folder and prepares the staging folder.

    Args:
        output_dir: str. The job's output folder.
        overwrite: bool. Replace a folder that already holds files (local folders keep the
            old output until the new one is complete; object-store folders lose it now).

    Returns:
        The folder the job writes into (see `staging_folder`), empty.

    Raises:
        OutputFolderError: the path is a file, or a folder that holds files and `overwrite`
            is false.
    """
    output_dir = output_dir.rstrip("/")
    if exists(output_dir) and not is_dir(output_dir):
        raise OutputFolderError(f"--output_dir {output_dir} is a file, not a folder")
    held = _files_under(output_dir) if exists(output_dir) else []
    if held and not overwrite:
        what = ("a finished run" if MANIFEST in held
                else f"{len(held)} file(s) of an unfinished run or of something else")
        raise OutputFolderError(
            f"--output_dir {output_dir} already holds {what}: pass --overwrite to replace "
            "it, or choose an empty folder (writing beside old files would mix two runs)")
    staging = staging_folder(output_dir)
    if staging == output_dir:
        if held:
            _remove_tree(output_dir)
    elif exists(staging):
        _remove_tree(staging)  # what a killed run of this job left behind
    return staging


def sha256_of(path: str) -> str:
    """The SHA-256 of a file (local or on an object store), in hex."""
    sha = hashlib.sha256()
    opener = open if _is_local(path) else _gfile().GFile
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _size(path: str) -> int:
    return os.path.getsize(path) if _is_local(path) else _gfile().stat(path).length


def write_manifest(folder: str) -> dict:
    """Writes `_SUCCESS`: every file under the folder with its size and SHA-256.

    Args:
        folder: str. A complete output folder.

    Returns:
        The manifest: `{"files": {relative path: {"bytes": n, "sha256": hex}}}`.
    """
    folder = folder.rstrip("/")
    files = {}
    for name in _files_under(folder):
        if name != MANIFEST:
            path = f"{folder}/{name}"
            files[name] = {"bytes": _size(path), "sha256": sha256_of(path)}
    manifest = {"files": files}
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    opener = open if _is_local(folder) else _gfile().GFile
    with opener(f"{folder}/{MANIFEST}", "w") as f:
        f.write(text)
    return manifest


def publish(staging: str, output_dir: str) -> None:
    """Marks a job's output complete and moves it into place.

    Args:
        staging: str. What `claim` returned, now holding the whole output.
        output_dir: str. The job's output folder; an old one is replaced.
    """
    output_dir = output_dir.rstrip("/")
    write_manifest(staging)
    if staging == output_dir:
        return
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    os.rename(staging, output_dir)


def read_manifest(folder: str) -> dict:
    """The manifest of a finished output folder.

    Args:
        folder: str. An output folder of `beam.preprocess` or `beam.features`.

    Returns:
        The manifest (see `write_manifest`).

    Raises:
        OutputFolderError: the folder has no manifest (the job did not finish, or the
            folder is not a job's output).
    """
    folder = folder.rstrip("/")
    path = f"{folder}/{MANIFEST}"
    if not exists(path):
        if not exists(folder):
            raise OutputFolderError(f"{folder} does not exist")
        raise OutputFolderError(
            f"{folder} has no {MANIFEST} manifest: the job that writes it did not finish "
            "(or the folder was written by hand or by an older version); rerun the job "
            "with --overwrite")
    opener = open if _is_local(path) else _gfile().GFile
    with opener(path, "r") as f:
        return json.load(f)


def listed_files(folder: str, subfolder: str, suffix: str) -> list[str]:
    """The files of one part of a finished output folder, checked against its manifest.

    Args:
        folder: str. The output folder.
        subfolder: str. A part of it (`train`, `dead_letter`, or "" for the top level).
        suffix: str. The files' ending (`.tfrecord`, `.parquet`).

    Returns:
        Full paths of the files the manifest lists there, sorted.

    Raises:
        OutputFolderError: no manifest, or the files there are not the listed ones (a file
            added, removed or changed in size since the job finished).
    """
    folder = folder.rstrip("/")
    listed = read_manifest(folder)["files"]
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""

    def part(names):
        return {n for n in names if n.startswith(prefix) and "/" not in n[len(prefix):]
                and n.endswith(suffix)}

    wanted = part(listed)
    present = part(_files_under(folder))
    if present != wanted:
        extra, missing = sorted(present - wanted), sorted(wanted - present)
        raise OutputFolderError(
            f"{folder}/{prefix} does not match its {MANIFEST} manifest"
            + (f": {len(extra)} file(s) not listed (first {extra[0]})" if extra else "")
            + (f": {len(missing)} listed file(s) missing (first {missing[0]})"
               if missing else "") + "; rerun the job with --overwrite")
    for name in sorted(wanted):
        if _size(f"{folder}/{name}") != listed[name]["bytes"]:
            raise OutputFolderError(f"{folder}/{name} changed size since the job wrote it; "
                                    "rerun the job with --overwrite")
    return [f"{folder}/{name}" for name in sorted(wanted)]


def check_shards(paths: list[str]) -> None:
    """Checks shards inside a job's output folder against its manifest.

    A path `<folder>/<split>/<shard>` whose `<folder>` is a job's output (it holds a
    manifest or `artifacts/`) must be one of the shards the manifest lists, and the split
    must hold no others; shards elsewhere are not checked.

    Args:
        paths: list of str. Shard files about to be read.

    Raises:
        OutputFolderError: as `listed_files`.
    """
    checked = set()
    for path in paths:
        split_dir = path.rstrip("/").rsplit("/", 1)[0]
        if "/" not in split_dir or split_dir in checked:
            continue
        checked.add(split_dir)
        folder, split = split_dir.rsplit("/", 1)
        if exists(f"{folder}/{MANIFEST}") or exists(f"{folder}/artifacts"):
            listed_files(folder, split, ".tfrecord")
