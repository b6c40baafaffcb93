"""`mnist-pipeline push`: a run's blessed SavedModel -> a new integer version under the model base path."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import config_flag, model_name_flag
from pipeline.commands._runs import add_stage_arguments, run_stages
from pipeline.config import Config

NAME = "push"
HELP = "push a run's blessed SavedModel as a new version under the model base path (TF Serving's layout)"
DESCRIPTION = """\
Push <workdir>/runs/<run>/export/saved_model to <model_base_path>/<model_name>/<version>/, as TFX's Pusher:
only if `mnist-pipeline evaluate` blessed it (or with --force); the version is one more than the newest;
the copy is built in a hidden folder beside the versions, reloaded and checked (signatures, predictions)
and renamed into place, so TF Serving never sees a partial version; an existing version is never changed.
The newest push.keep_versions (default 5) versions are kept. Not blessed: nothing is pushed, exit status 0.
The outcome goes to <workdir>/runs/<run>/push/pushed.json.

  mnist-pipeline push                       # the newest run that was exported
  mnist-pipeline push --run-id ID --force   # push even if not blessed
  mnist-pipeline versions                   # what is pushed; the newest is served"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, needs="export")
    config_flag(parser, "--force", key="push.force", action="store_const", const=True,
                help="push even if the model is not blessed")
    model_name_flag(parser)
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="TF Serving's model base path (default <workdir>/serving/models)")
    config_flag(parser, "--keep-versions", key="push.keep_versions", type=int, metavar="N",
                help="keep the newest N versions (default 5)")


def run(config: Config, args: argparse.Namespace) -> int:
    run_id, records = run_stages(config, args, ["push"], needs="export")
    p = records["push"].properties
    if not p["pushed"]:
        print(f"run {run_id}: {p['reason']}")
    else:
        print(f"run {run_id}: {p['reason']} as version {p['version']}: {records['push'].outputs['pushed_model'].uri}")
        if p.get("removed_versions"):
            print(f"  removed old versions (keeping {config.push.keep_versions}): "
                  + ", ".join(map(str, p["removed_versions"])))
    if "push_record" in records["push"].outputs:
        print(f"  record: {records['push'].outputs['push_record'].uri}")
    if p["pushed"]:
        print(f"  lineage: mnist-pipeline lineage {p['version']} --workdir {config.workdir}")
    return 0
