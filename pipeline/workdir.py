"""Checks and clean-up of the workdir as a whole, for every command alike.

    check_workdir(config.workdir)          # pipeline.cli.main, before any command runs
    remove_stale_temp_dirs(config.workdir) # at the start of a score: Beam's temp folders left by a kill
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from pipeline import paths
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

# Beam's WriteToText/WriteToParquet stage shards in `<output dir>/beam-temp-<prefix>-<uuid>/` and removes the folder
# when the write finalizes; a killed score leaves it. One untouched for this long belongs to no live write.
STALE_AFTER_SECONDS = 24 * 3600


def check_workdir(workdir: str | os.PathLike) -> Path:
    """The workdir as a Path; a ConfigError if it (or a folder above it) is a file, which every command would
    otherwise meet as NotADirectoryError / FileExistsError (or, for `serve`, not at all)."""
    path = Path(workdir)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"workdir {str(path)!r}: {str(folder)!r} is a file, not a folder; "
                                  "pass a folder (or a path that does not exist yet) to --workdir")
            break
    return path


def remove_stale_temp_dirs(workdir: str | os.PathLike, *, now: float | None = None) -> list[Path]:
    """Remove Beam temp folders under `<workdir>/runs/*/score/` not touched for STALE_AFTER_SECONDS."""
    now = time.time() if now is None else now
    removed = []
    for folder in sorted(paths.runs_dir(workdir).glob("*/score/beam-temp-*")):
        try:
            newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
        except OSError:
            continue
        if folder.is_dir() and now - newest > STALE_AFTER_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, left by a score that did not finish", folder)
            removed.append(folder)
    return removed
