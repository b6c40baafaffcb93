"""`mnist-pipeline push`: a run's blessed SavedModel -> a new integer version under the model base path."""

from __future__ import annotations

import argparse
import json
import logging

from pipeline.cli import config_flag
from pipeline.commands._runs import add_run_id_argument, resolve_run_id, test_images
from pipeline.config import Config
from pipeline.errors import PipelineError

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
    add_run_id_argument(parser, "export")
    config_flag(parser, "--force", key="push.force", action="store_const", const=True,
                help="push even if the model is not blessed")
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="TF Serving's model base path (default <workdir>/serving/models)")
    config_flag(parser, "--keep-versions", key="push.keep_versions", type=int, metavar="N",
                help="keep the newest N versions (default 5)")


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{str(path)!r} cannot be read ({exc}); run `mnist-pipeline evaluate` again") from exc


def run(config: Config, args: argparse.Namespace) -> int:
    from components import push
    from pipeline import paths
    from pipeline.config import model_base_path

    run_id = resolve_run_id(config.workdir, args.run_id, needs="export", make_it="mnist-pipeline export")
    blessing = _read_json(paths.blessing_path(config.workdir, run_id))
    if blessing is None and not config.push.force:
        raise PipelineError(
            f"run {run_id!r} has not been evaluated (no {str(paths.blessing_path(config.workdir, run_id))!r}); "
            "run `mnist-pipeline evaluate` first, or push with --force"
        )
    metrics = _read_json(paths.metrics_path(config.workdir, run_id)) or {}
    will_push = config.push.force or bool(blessing and blessing.get("blessed"))
    out = push.run(
        config.push,
        paths.exported_model_dir(config.workdir, run_id),
        model_base_path(config),
        blessing=blessing,
        metadata={"run_id": run_id, "accuracy": metrics.get("accuracy"), "dataset": metrics.get("dataset")},
        record_path=paths.push_record_path(config.workdir, run_id),
        check_images=test_images(config, 8) if will_push else None,
    )
    if not out.pushed:
        print(f"run {run_id}: {out.reason}")
    else:
        print(f"run {run_id}: {out.reason} as version {out.version}: {out.version_dir}")
        if out.removed_versions:
            print(f"  removed old versions (keeping {config.push.keep_versions}): "
                  + ", ".join(map(str, out.removed_versions)))
    print(f"  record: {out.record_path}")
    return 0
