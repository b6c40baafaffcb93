"""Artifact paths as the run store keeps them: inside the workdir, relative to it, so a workdir can be copied or
moved whole and a copy reads its own files; outside it (an IDX source folder, a model base path elsewhere,
gs://...), absolute or as given.

    uris = WorkdirURIs("/w")
    uris.stored("/w/runs/r1/train/model.keras")     # "runs/r1/train/model.keras"
    uris.resolved("runs/r1/train/model.keras")      # "/w/runs/r1/train/model.keras": the workdir in use
    uris.stored_value({"data_dir": "/w/data"})      # {"data_dir": "{workdir}/data"}

A stored URI that is relative is relative to the workdir. Properties and recorded configuration may hold
paths too (a Dataset's data_dir, a score's summary file), but a relative string there could be anything, so
a path inside the workdir is written there as "{workdir}/<relative path>" and resolved the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from components.portable import relative_to_any

WORKDIR_TOKEN = "{workdir}"


def is_remote(uri: str) -> bool:
    return "://" in uri


class WorkdirURIs:
    """Turns paths into their stored form for one workdir and back (see the module docstring)."""

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(os.path.abspath(workdir))
        # A workdir reached through a symlink is still this workdir: its real path counts too.
        self._roots = sorted({os.fspath(self.workdir), os.path.realpath(self.workdir)}, key=len, reverse=True)

    def relative(self, uri: str | os.PathLike) -> str | None:
        """The path of `uri` relative to the workdir, or None when it is remote or outside it."""
        text = os.fspath(uri)
        if not text or is_remote(text):
            return None
        return relative_to_any(os.path.abspath(text), self._roots)

    def stored(self, uri: str | os.PathLike) -> str:
        """Relative to the workdir when inside it; absolute otherwise (a remote URI unchanged)."""
        text = os.fspath(uri)
        if not text or is_remote(text):
            return text
        rel = self.relative(text)
        return rel if rel is not None else os.path.abspath(text)

    def resolved(self, stored: str) -> str:
        """A stored URI as a path in the workdir in use (absolute and remote ones unchanged)."""
        if not stored or is_remote(stored) or os.path.isabs(stored):
            return stored
        return os.path.normpath(os.path.join(self.workdir, stored))

    def stored_value(self, value: Any) -> Any:
        """Properties or configuration with every absolute path inside the workdir as "{workdir}/<rel>"."""
        if isinstance(value, str):
            rel = self.relative(value) if os.path.isabs(value) else None
            return value if rel is None else token(rel)
        return _map(value, self.stored_value)

    def resolved_value(self, value: Any) -> Any:
        if isinstance(value, str):
            if value == WORKDIR_TOKEN:
                return os.fspath(self.workdir)
            if value.startswith(WORKDIR_TOKEN + "/"):
                return self.resolved(value[len(WORKDIR_TOKEN) + 1:])
            return value
        return _map(value, self.resolved_value)


def token(rel: str) -> str:
    """The stored form of a workdir-relative path inside properties: "{workdir}/<rel>"."""
    return WORKDIR_TOKEN if rel == "." else f"{WORKDIR_TOKEN}/{rel}"


def _map(value: Any, fn) -> Any:
    if isinstance(value, dict):
        return {k: fn(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fn(v) for v in value]
    return value
