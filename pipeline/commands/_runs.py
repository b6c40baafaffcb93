"""Which run a stage command works on: `--run-id ID`, or the newest run that has the stage it needs."""

from __future__ import annotations

import logging
import os

from pipeline import paths
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def add_run_id_argument(parser, stage_needed: str) -> None:
    parser.add_argument(
        "--run-id", metavar="ID", default=None,
        help=f"the run to work on (default: the newest run with a {stage_needed} stage)",
    )


def resolve_run_id(workdir: str | os.PathLike, run_id: str | None, *, needs: str, make_it: str) -> str:
    """`run_id` checked to exist with a `needs` stage folder, or the newest such run; errors say what to run."""
    if run_id is None:
        found = paths.latest_run_id(workdir, having=needs)
        if found is None:
            raise PipelineError(
                f"no run in {os.fspath(paths.runs_dir(workdir))!r} has a {needs} stage; run `{make_it}` first"
            )
        return found
    if not paths.run_dir(workdir, run_id).is_dir():
        raise PipelineError(f"run {run_id!r} does not exist in {os.fspath(paths.runs_dir(workdir))!r}")
    if not paths.stage_dir(workdir, run_id, needs).is_dir():
        raise PipelineError(f"run {run_id!r} has no {needs} stage; run `{make_it}` first")
    return run_id


def test_images(config, count: int):
    """The first `count` test images (float32 [n, 28, 28, 1]) for warmup requests and push checks, or None
    (the stage then uses its own stand-ins) when no dataset is prepared in the workdir."""
    from components import data
    from pipeline.errors import DataError

    try:
        ds = data.split_dataset(paths.data_dir(config.workdir), config.data.dataset, "test", batch_size=count,
                                max_examples=count)
        return next(iter(ds))[0].numpy()
    except (DataError, StopIteration) as exc:
        log.info("no test images (%s); using stand-ins", exc)
        return None
