"""Paths as the records a stage writes keep them: inside the record root (the workdir), relative to it, so a
workdir copied or moved whole still names its own files; outside it (an IDX source folder, a model base path
elsewhere, gs://...), as given.

    portable("/w/runs/r1/export/saved_model", "/w")     # "runs/r1/export/saved_model"
    portable("/data/idx", "/w")                          # "/data/idx"
    portable("/w/runs/r1/export/saved_model", None)      # as before: "/w/runs/r1/export/saved_model"
    root_holding("/elsewhere/models", "/w")              # None: a record written there keeps absolute paths

Components take the root as an explicit argument (`record_root`, None: absolute paths, as for a library user
without a workdir); the stage adapters pass the workdir. The run store (pipeline/uris.py) matches paths the
same way, with `relative_to_any`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def relative_to_any(path: str, roots: Iterable[str]) -> str | None:
    """`path` relative to the first of `roots` it is inside ("." for a root itself), as a POSIX path; else None.

    Pure string work on normalized paths (no file system): a relative path only matches a relative root."""
    norm = os.path.normpath(path)
    for root in sorted(roots, key=len, reverse=True):
        if root == ".":
            if not os.path.isabs(norm):
                return Path(norm).as_posix()
            continue
        if norm == root:
            return "."
        if norm.startswith(root.rstrip(os.sep) + os.sep):
            return Path(norm[len(root.rstrip(os.sep)) + 1:]).as_posix()
    return None


def relative(path: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """`path` relative to `root` when inside it (a root reached through a symlink counts by its real path too);
    None when outside it or remote. Glob characters pass through untouched."""
    text = os.fspath(path)
    if not text or "://" in text:
        return None
    base = os.path.abspath(root)
    return relative_to_any(os.path.abspath(text), {base, os.path.realpath(base)})


def portable(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """`path` as a record keeps it: relative to `root` when inside it, else as given (also when `root` is None)."""
    rel = relative(path, root) if root is not None else None
    return os.fspath(path) if rel is None else rel


def portable_value(value: Any, root: str | os.PathLike | None) -> Any:
    """`value` (a record: dicts, lists, strings) with every absolute path string inside `root` made relative; dict
    keys too (a summary's per-file counts). Other strings are left alone: a relative string could be anything."""
    if root is None:
        return value
    if isinstance(value, str):
        return portable(value, root) if os.path.isabs(value) else value
    if isinstance(value, dict):
        return {portable_value(k, root): portable_value(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_value(v, root) for v in value]
    return value


def root_holding(path: str | os.PathLike, root: str | os.PathLike | None) -> str | os.PathLike | None:
    """`root` when `path` (where a record is written) is inside it, else None: a record outside the workdir (a
    version pushed to a model base path elsewhere, a summary written to gs://) keeps absolute paths, since a
    relative one would be relative to nothing there."""
    return root if root is not None and relative(path, root) is not None else None
