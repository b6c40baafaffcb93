"""What every stage command shares: it is `mnist-pipeline run` restricted to its stages, in a run of its choosing.

    record = run_stages(config, args, ["export"], needs="train")

Same runner, same inputs resolution (baseline, images, history), same run store records (so `runs` and
`lineage` see it), same workdir lock and the same cache (`--no-cache` to rerun). By default a command that
needs an earlier stage adds itself to the newest run that finished that stage; `--run-id` names the run.
"""

from __future__ import annotations

import argparse
import logging
import os

from pipeline.config import Config
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def add_stage_arguments(parser: argparse.ArgumentParser, *, needs: str | None) -> None:
    """`--run-id` and `--no-cache`, as every stage command takes them."""
    if needs is None:
        run_help = "the run to work in: an existing one continues (e.g. after a kill), a new id starts one " \
                   "(default: a new run)"
    else:
        run_help = f"the run to add this stage to (default: the newest run with a finished {needs} stage)"
    parser.add_argument("--run-id", metavar="ID", default=None, help=run_help)
    parser.add_argument("--no-cache", action="store_true",
                        help="run the stage even when a cached result with the same inputs and configuration exists")


def run_stages(config: Config, args: argparse.Namespace, stages: list[str], *, needs: str | None):
    """Run `stages` through the runner; the StageRecord of each, by name. A skipped stage is an error here: the
    user asked for exactly this stage."""
    from pipeline import paths
    from pipeline.runner import StageFailed, latest_run_with, run_pipeline
    from pipeline.stages import default_stages
    from pipeline.store import RunStore

    run_id = args.run_id
    if run_id is not None:
        paths.check_run_id(run_id)
    if needs is not None:
        if run_id is None:
            run_id = latest_run_with(config.workdir, needs)
            if run_id is None:
                raise PipelineError(f"no run in {os.fspath(config.workdir)!r} has finished a {needs} stage; "
                                    f"run `mnist-pipeline {needs}` first")
        else:
            store_path = paths.store_path(config.workdir)
            finished = {}
            if store_path.is_file():
                with RunStore(store_path) as store:
                    finished = store.finished_stages(run_id)
            if needs not in finished:
                raise PipelineError(f"run {run_id!r} in {os.fspath(config.workdir)!r} has no finished {needs} stage; "
                                    f"run `mnist-pipeline {needs} --run-id {run_id}` first (see `mnist-pipeline runs`)")
    command = getattr(args, "command", None) or stages[-1]
    try:
        result = run_pipeline(config, default_stages(), stages=stages, run_id=run_id, use_cache=not args.no_cache,
                              owner=f"mnist-pipeline {command}")
    except StageFailed as exc:  # the stage's own message first; the run it is recorded in after it
        raise PipelineError(f"{exc.error} (recorded as failed in run {exc.run_id})") from exc
    records = {r.name: r for r in result.stages}
    for record in records.values():
        if record.status == "skipped":
            raise PipelineError(f"run {result.run_id}: stage {record.name} could not run: {record.reason}")
    cached = [r.name for r in records.values() if r.status == "cached"]
    if cached:
        print(f"run {result.run_id}: {', '.join(cached)} cached (same inputs, configuration and code as an earlier "
              "run; --no-cache reruns)")
    return result.run_id, records
