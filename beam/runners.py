"""The runner a Beam job runs on: `--runner DaskRunner` by its name, a Dask cluster to run it.

Beam's in-process runner stays the default (`beam.preprocess.local_runner_args`); these
helpers let every job take `--runner DaskRunner` (`beam.dask_runner`) and start a local
Dask cluster for it when no scheduler address is given. Nothing here imports Dask until a
cluster starts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os

# The name jobs accept for `--runner`, and the class Beam is given in its place.
RUNNER_NAME = "DaskRunner"
RUNNER_PATH = "beam.dask_runner.DaskRunner"


def runner_args(beam_args: list[str]) -> list[str]:
    """Beam arguments with `--runner DaskRunner` naming `beam.dask_runner.DaskRunner`.

    Beam resolves a runner by a known short name or a dotted path; its DaskRunner is
    neither, and it cannot run these jobs (`beam.dask_runner` says why), so the jobs'
    `--runner DaskRunner` is rewritten to the completed one.

    Args:
        beam_args: list of str. Pipeline options as given on the command line.

    Returns:
        The options, `--runner DaskRunner` (either spelling) rewritten, others unchanged.
    """
    out, rest = [], iter(beam_args)
    for arg in rest:
        if arg == "--runner":
            value = next(rest, "")
            out.append(f"--runner={RUNNER_PATH if value == RUNNER_NAME else value}")
        elif arg == f"--runner={RUNNER_NAME}":
            out.append(f"--runner={RUNNER_PATH}")
        else:
            out.append(arg)
    return out


def uses_dask(beam_args: list[str]) -> bool:
    """Whether the (rewritten) Beam arguments run on `beam.dask_runner.DaskRunner`."""
    return f"--runner={RUNNER_PATH}" in beam_args


@contextlib.contextmanager
def dask_cluster(beam_args: list[str], workers: int):
    """A `LocalCluster` of worker processes for a Dask run given no scheduler address.

    Args:
        beam_args: list of str. Rewritten Beam arguments (`runner_args`).
        workers: int. Worker processes (one thread each); 0: one per core.

    Yields:
        The arguments, with `--dask_client_address` of the cluster added when one started.
    """
    if not uses_dask(beam_args) or any(
            a.startswith(("--dask_client_address", "--dask_scheduler_file")) for a in beam_args):
        yield beam_args
        return
    from dask.distributed import LocalCluster

    # Dask logs at INFO through its own handlers, here and in each worker process (which
    # reads its level from the environment): follow the job's level (`--verbose`).
    level = logging.getLogger().getEffectiveLevel()
    logging.getLogger("distributed").setLevel(level)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", logging.getLevelName(level).lower())
    with LocalCluster(n_workers=workers or None, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=level) as cluster:
        yield [*beam_args, f"--dask_client_address={cluster.scheduler_address}"]


@contextlib.contextmanager
def pipeline_on(beam_args: list[str], workers: int, save_main_session: bool):
    """A Beam pipeline on the arguments' runner (with a `dask_cluster` when they ask for one).

    Args:
        beam_args: list of str. Rewritten Beam arguments (`runner_args`).
        workers: int. `--dask_workers`.
        save_main_session: bool. Pickle the main session for remote workers.

    Yields:
        The `beam.Pipeline`; run it inside the block (the cluster stops at its end).
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

    with dask_cluster(beam_args, workers) as args:
        options = PipelineOptions(args)
        options.view_as(SetupOptions).save_main_session = save_main_session
        yield beam.Pipeline(options=options)


def add_dask_workers_flag(parser: argparse.ArgumentParser) -> None:
    """Adds `--dask_workers` to a job's argument parser."""
    parser.add_argument("--dask_workers", type=int, default=0,
                        help="With --runner DaskRunner and no --dask_client_address: worker "
                             "processes of a Dask cluster started on this machine for the "
                             "job (0: one per core).")
