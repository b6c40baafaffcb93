"""`mnist-pipeline versions`: the versions pushed under the model base path; the newest is the one served."""

from __future__ import annotations

import argparse
import json
import os

from pipeline.cli import config_flag, model_name_flag
from pipeline.config import Config

NAME = "versions"
HELP = "list the pushed model versions with accuracy and date; mark the one served"
DESCRIPTION = """\
List <model_base_path>/<model_name>/<version>/ with what the pusher recorded in each (test accuracy, date, run,
source; for a rollback, which version it copies). TF Serving (and `mnist-pipeline serve`) serve the newest
version under their default version policy: it is marked `served`."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model_name_flag(parser)
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="TF Serving's model base path (default <workdir>/serving/models)")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per version) instead of a table")


def _note(meta: dict) -> str:
    if meta.get("copy_of_version") is not None:
        return f"rollback to version {meta['copy_of_version']} (from {meta.get('rolled_back_from')})"
    if meta.get("forced"):
        return "forced (not blessed)"
    if not meta:
        return "no push record"
    return ""


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline.config import model_base_path
    from serving import model_registry

    base = model_base_path(config)
    versions = model_registry.list_versions(base, config.push.model_name)
    served_version = model_registry.newest_version(base, config.push.model_name)  # the newest complete one
    if args.json:
        rows = [
            {"version": v.version, "path": os.fspath(v.path), "served": v == served_version,
             "complete": v.complete, **{"metadata": v.metadata}}
            for v in versions
        ]
        print(json.dumps(rows, indent=2))
        return 0
    where = model_registry.model_dir(base, config.push.model_name)
    if not versions:
        print(f"no versions pushed in {where}; push one with `mnist-pipeline push`")
        return 0
    print(f"{where}:")
    if served_version is not None:
        from serving.signatures import read_class_names

        print(f"  dataset {served_version.metadata.get('dataset') or 'not recorded'}; classes: "
              + ", ".join(read_class_names(served_version.path)))
    print(f"  {'version':>7}  {'':6}  {'accuracy':>8}  {'pushed at (UTC)':25}  {'run':24}  note")
    for v in versions:
        meta = v.metadata
        accuracy = meta.get("accuracy")
        served = "served" if v == served_version else ""
        note = _note(meta) if v.complete else "INCOMPLETE: no saved_model.pb"
        print(f"  {v.version:>7}  {served:6}  {'-' if accuracy is None else format(accuracy, '.4f'):>8}  "
              f"{meta.get('pushed_at') or '-':25}  {meta.get('run_id') or '-':24}  {note}")
    return 0
