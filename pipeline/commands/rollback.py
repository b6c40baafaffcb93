"""`mnist-pipeline rollback`: serve an earlier version again, without deleting any history."""

from __future__ import annotations

import argparse
import dataclasses

from pipeline.cli import config_flag, model_name_flag
from pipeline.config import Config
from pipeline.errors import PipelineError

NAME = "rollback"
HELP = "serve an earlier pushed version again (pushed anew as the newest version; history kept)"
DESCRIPTION = """\
Make an earlier version the one served. TF Serving (and `mnist-pipeline serve`) serve the newest version,
so the earlier version is pushed again, as a copy, under a new, higher version number (checked and renamed
into place like any push) whose record says `rolled_back_from` (the version served until now) and
`copy_of_version`. Nothing is deleted but what push.keep_versions drops anyway.

  mnist-pipeline rollback            # back to the version before the newest
  mnist-pipeline rollback --to 3     # back to version 3
  mnist-pipeline versions            # check"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", type=int, metavar="VERSION", default=None,
                        help="the version to serve again (default: the one before the newest)")
    model_name_flag(parser)
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="TF Serving's model base path (default <workdir>/serving/models)")


def run(config: Config, args: argparse.Namespace) -> int:
    from components import push
    from pipeline.config import model_base_path
    from serving import model_registry

    base = model_base_path(config)
    name = config.push.model_name
    versions = model_registry.list_versions(base, name)
    where = model_registry.model_dir(base, name)
    if len(versions) < 2:
        raise PipelineError(f"nothing to roll back to in {str(where)!r}: {len(versions)} version(s) pushed")
    served = versions[-1]
    if args.to is None:
        target = versions[-2]
    else:
        found = [v for v in versions if v.version == args.to]
        if not found:
            known = ", ".join(str(v.version) for v in versions)
            raise PipelineError(f"version {args.to} is not in {str(where)!r}; it has: {known}")
        target = found[0]
        if target.version == served.version:
            raise PipelineError(f"version {args.to} is the newest and already served; nothing to roll back")
    meta = target.metadata
    out = push.run(
        dataclasses.replace(config.push, force=True),  # the operator's decision; it was checked when first pushed
        target.path,
        base,
        blessing=None,
        metadata={
            "run_id": meta.get("run_id"),
            "accuracy": meta.get("accuracy"),
            "dataset": meta.get("dataset"),
            # The copy keeps the judgement the version got when it was first pushed.
            "blessed": meta.get("blessed"),
            "forced": meta.get("forced"),
            "blessing_reason": meta.get("blessing_reason"),
            "rolled_back_from": served.version,
            "copy_of_version": target.version,
        },
    )
    print(f"rolled back: version {out.version} (a copy of version {target.version}) is now served "
          f"instead of version {served.version}: {out.version_dir}")
    if out.removed_versions:
        print(f"  removed old versions (keeping {config.push.keep_versions}): " + ", ".join(map(str, out.removed_versions)))
    return 0
