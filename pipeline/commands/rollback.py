"""`mnist-pipeline rollback`: serve an earlier version again, without deleting any history."""

from __future__ import annotations

import argparse

from pipeline.cli import config_flag, model_name_flag
from pipeline.config import Config
from pipeline.errors import PipelineError

NAME = "rollback"
HELP = "serve an earlier pushed version again (pushed anew as the newest version; history kept)"
DESCRIPTION = """\
Make an earlier version the one served. TF Serving (and `mnist-pipeline serve`) serve the newest version,
so the earlier version is pushed again, as a copy, under a new, higher version number (checked and renamed
into place like any push) whose record says `rolled_back_from` (the version served until now) and
`copy_of_version`. Nothing is deleted but what push.keep_versions drops anyway. Like every stage, it runs
under the workdir lock and is recorded as a run of its own (`mnist-pipeline runs`), whose lineage leads
from the copy back to the run that made the version it copies.

  mnist-pipeline rollback            # back to the version before the newest
  mnist-pipeline rollback --to 3     # back to version 3
  mnist-pipeline versions            # check
  mnist-pipeline lineage N           # N: the new version"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", type=int, metavar="VERSION", default=None,
                        help="the version to serve again (default: the one before the newest)")
    model_name_flag(parser)
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="TF Serving's model base path (default <workdir>/serving/models)")


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline.config import resolve_defaults
    from pipeline.resolvers import rollback_choice
    from pipeline.runner import StageFailed, run_pipeline
    from pipeline.stages import rollback_spec

    config = resolve_defaults(config)
    rollback_choice(config, args.to)  # nothing to roll back to: said before a run is recorded for it
    try:
        result = run_pipeline(config, [rollback_spec(args.to)], owner="mnist-pipeline rollback")
    except StageFailed as exc:  # the stage's own message first; the run it is recorded in after it
        raise PipelineError(f"{exc.error} (recorded as failed in run {exc.run_id})") from exc
    record = result.stage("rollback")
    p = record.properties
    print(f"rolled back: version {p['version']} (a copy of version {p['copy_of_version']}) is now served "
          f"instead of version {p['rolled_back_from']}: {record.outputs['pushed_model'].uri}")
    if p.get("removed_versions"):
        print(f"  removed old versions (keeping {config.push.keep_versions}): " + ", ".join(map(str, p["removed_versions"])))
    print(f"  run {result.run_id}; lineage: mnist-pipeline lineage {p['version']} --workdir {config.workdir}")
    return 0
