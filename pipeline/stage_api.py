"""The stage API: what a stage declares (`StageSpec`, its `Input`s) and what it is handed and returns
(`StageContext`, `StageResult`). `pipeline.stages` implements the pipeline's stages on it; `pipeline.runner`
runs any list of them and knows none by name.

    StageSpec("export", export_stage, inputs=(Input("model", "train"), Input("dataset", "ingest")))

    def export_stage(ctx: StageContext) -> StageResult:
        out = export.run(Path(ctx.inputs["model"].uri), ctx.out_dir / export.SAVED_MODEL_DIR, ...)
        return StageResult({"saved_model": artifact(out.saved_model_dir, "SavedModel")})
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.store import Artifact

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.store import RunStore


class SkipStage(Exception):
    """Raised by a stage that cannot do anything useful this run (e.g. nothing pushed to score); not a failure."""


@dataclass(frozen=True)
class StageResult:
    """What a stage produced: named output artifacts and a few properties (accuracy, version, counts)."""

    outputs: dict[str, Artifact] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRecord:
    """A stage's outcome in this run, as later stages, the report and the CLI see it."""

    name: str
    status: str  # succeeded, cached, skipped, failed, resumed (finished earlier in this same run)
    duration: float
    outputs: dict[str, Artifact]
    properties: dict[str, Any]
    reason: str | None = None
    execution_id: int | None = None


@dataclass(frozen=True)
class StageContext:
    config: Config
    workdir: Path
    run_id: str
    stage: str
    out_dir: Path  # paths.stage_dir(workdir, run_id, stage): where a per-run stage writes
    inputs: dict[str, Artifact]
    upstream: Mapping[str, StageRecord]  # earlier stages of this run (or the latest run that had them)
    store: RunStore
    code_version: str


@dataclass(frozen=True)
class Input:
    """An input a stage takes: output `output` of stage `stage`, or (when `stage` is None) from `resolve`."""

    name: str
    stage: str | None = None
    output: str | None = None
    resolve: Callable[[Config, Path, RunStore, Mapping[str, StageRecord], dict[str, Artifact]], Artifact | None] | None = None
    required: bool = True
    in_cache_key: bool = True  # False: recorded for lineage only (its content is derived from other inputs)
    # Taken from another run (the stage is not in this one): only an output this accepts, e.g. the dataset
    # that config.data.dataset names when a workdir holds MNIST and Fashion-MNIST runs; None: the newest.
    accept: Callable[[Config, Artifact], bool] | None = None


@dataclass(frozen=True)
class StageSpec:
    name: str
    execute: Callable[[StageContext], StageResult]
    sections: tuple[str, ...] = ()  # config sections whose values change what the stage does
    inputs: tuple[Input, ...] = ()
    cacheable: bool = True
    after_failure: bool = False  # also runs (best effort) when an earlier stage failed: the report


# -- identities ----------------------------------------------------------------------------------------------


def fingerprint_path(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a folder's relative paths and file contents (hidden temp files ignored)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        hash_file(h, p)
    elif p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            rel = f.relative_to(p).as_posix()
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            h.update(rel.encode() + b"\0")
            hash_file(h, f)
    else:
        raise FileNotFoundError(p)
    return h.hexdigest()[:32]


def hash_file(h: Any, path: Path) -> None:
    with path.open("rb") as fh:
        for chunk in iter(functools.partial(fh.read, 1 << 20), b""):
            h.update(chunk)


def artifact(uri: str | os.PathLike, type_: str, **properties: Any) -> Artifact:
    """An artifact for a path that exists now, with its content fingerprint."""
    props = {k: v for k, v in properties.items() if v is not None}
    props.setdefault("fingerprint", fingerprint_path(uri))
    return Artifact(os.fspath(uri), type_, props)
