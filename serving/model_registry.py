"""The versions pushed under a model base path, as TF Serving sees them: `<base>/<model>/<integer>/`.

    versions = model_registry.list_versions(base, "mnist")      # oldest first
    served = model_registry.newest_version(base, "mnist")       # what TF Serving's default policy serves
    served.path, served.version, served.metadata.get("accuracy")

Only folders whose name is an ASCII decimal integer that fits int64 count, as in TF Serving (a push in flight builds in a hidden,
non-integer folder beside them). Each version carries the pusher's record in
`assets.extra/mnist_pipeline_push.json` (accuracy, date, run id, source; `rolled_back_from` for a rollback).
Imports no TensorFlow: the CLI, the Beam scorer and the local server all resolve "the served version" here.
This module owns TF Serving's model base path layout; nobody else joins `<base>/<model>/<version>`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    version: int
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        """The model's name: the folder that holds the version folders."""
        return self.path.parent.name

    @property
    def complete(self) -> bool:
        """A SavedModel is there (a folder put in by hand may lack one)."""
        return (self.path / "saved_model.pb").is_file()


MAX_VERSION = 2**63 - 1  # TF Serving's versions are int64


def parse_version(name: str) -> int | None:
    """The version a folder name stands for, or None: ASCII digits only (str.isdigit() also takes '²' and
    '１００') and at most int64's largest, as TF Serving's file system source parses it."""
    if not name or not name.isascii() or not name.isdigit():
        return None
    version = int(name)
    return version if version <= MAX_VERSION else None


PUSH_METADATA_FILE = "mnist_pipeline_push.json"  # under <version>/assets.extra/, beside the warmup file


def model_dir(base_path: str | os.PathLike, model_name: str) -> Path:
    """`<base>/<model_name>/`: the folder TF Serving's --model_base_path points at."""
    return Path(base_path) / model_name


def version_dir(base_path: str | os.PathLike, model_name: str, version: int) -> Path:
    """`<base>/<model_name>/<version>/`: one servable version, as TF Serving's file system source lists it."""
    return model_dir(base_path, model_name) / str(int(version))


def push_metadata_path(version_dir_: str | os.PathLike) -> Path:
    """The pusher's record inside a pushed version (TF Serving ignores assets.extra/ but for warmup)."""
    return Path(version_dir_) / "assets.extra" / PUSH_METADATA_FILE


def version_at(version_dir_: str | os.PathLike) -> ModelVersion:
    """The version a `<base>/<model>/<integer>/` folder holds (with its push record); ValueError if the folder's
    name is not a version number."""
    path = Path(version_dir_)
    version = parse_version(path.name)
    if version is None:
        raise ValueError(f"{os.fspath(path)!r} is not a version folder <base>/<model>/<integer>/")
    return ModelVersion(version, path, read_metadata(path))


def read_metadata(version_dir_: str | os.PathLike) -> dict[str, Any]:
    """The pusher's record of a version; {} when it has none or it cannot be read."""
    path = push_metadata_path(version_dir_)
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read push metadata %s: %s", path, exc)
        return {}


def list_versions(base_path: str | os.PathLike, model_name: str) -> list[ModelVersion]:
    """Every integer version under `<base>/<model_name>/`, oldest first; [] when there is none."""
    return versions_in(model_dir(base_path, model_name))


def versions_in(model_dir_: str | os.PathLike) -> list[ModelVersion]:
    """Every integer version in a model's folder (what --model_base_path names), oldest first."""
    root = Path(model_dir_)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        version = parse_version(p.name)
        if version is None:
            if not p.name.startswith("."):  # a push in flight is hidden; anything else is worth a word
                log.debug("%s is not a version folder (not an int64 decimal name); ignored", p)
            continue
        if p.is_dir():
            found.append(ModelVersion(version, p, read_metadata(p)))
    return sorted(found, key=lambda v: v.version)


def model_names(base_path: str | os.PathLike) -> list[str]:
    """The models under a base path, sorted: every `<base>/<name>/` (not hidden) that holds a version folder."""
    root = Path(base_path)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and versions_in(p))


def newest_version(base_path: str | os.PathLike, model_name: str, *, complete: bool = True) -> ModelVersion | None:
    """The version TF Serving serves under its default policy (latest), or None. Only a complete version counts
    (TF Serving serves only one it can load): an incomplete newest folder is skipped, by `versions`, `score`,
    `evaluate` and the local server alike. `complete=False`: the newest folder whatever it holds."""
    versions = [v for v in list_versions(base_path, model_name) if v.complete or not complete]
    return versions[-1] if versions else None
