"""Inputs a stage finds in the workdir or the model base path rather than in an earlier stage of its run: the
`resolve` functions of `pipeline.stages`' Inputs. Each takes (config, workdir, store, upstream, inputs so far)
and returns an Artifact, None (no such input; the stage decides), or raises SkipStage / a PipelineError.

    Input("baseline", resolve=resolvers.baseline, required=False)   # the newest pushed version, not the candidate

Like TFX's resolvers (latest blessed model, latest artifact), they read the run store and the files; none
imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import paths
from pipeline.config import Config, model_base_path
from pipeline.errors import PipelineError
from pipeline.stage_api import SkipStage, artifact, fingerprint_path
from pipeline.store import Artifact, RunStore
from serving import model_registry


def source(config: Config, workdir: Path, store: RunStore, upstream, inputs) -> Artifact | None:
    """The IDX folder ingest reads (offline), fingerprinted by content; None for the TFDS download."""
    if config.data.source_dir is None:
        return None
    source = Path(config.data.source_dir)
    if not source.is_dir():
        return None  # ingest itself raises the error that names the folder
    return artifact(source.resolve(), "ExternalData")


def model_identity(saved_model_dir: str | os.PathLike) -> str:
    """A SavedModel's graph and weights (saved_model.pb + variables/), not the records a push adds beside them."""
    root = Path(saved_model_dir)
    parts = [fingerprint_path(root / "saved_model.pb")]
    if (root / "variables").is_dir():
        parts.append(fingerprint_path(root / "variables"))
    return ":".join(parts)


def pushed_artifact(store: RunStore, version) -> Artifact:
    """The store's record of a pushed version (so lineage links up), or a new one for a version put there by hand."""
    known = store.artifacts_by_uri(os.fspath(version.path), "PushedModel")
    if known and known[-1].fingerprint == fingerprint_path(version.path):
        return known[-1]
    return artifact(version.path, "PushedModel", version=version.version, model_name=version.name)


def baseline(config: Config, workdir: Path, store: RunStore, upstream, inputs) -> Artifact | None:
    """The newest pushed version that is not the candidate itself: comparing a model with itself says nothing,
    and it keeps a rerun with nothing changed a cache hit (TFX's latest-blessed-model resolver, roughly)."""

    candidate = inputs.get("model")
    own = model_identity(candidate.uri) if candidate is not None else None
    ds = inputs.get("dataset")
    dataset = ds.properties.get("name") if ds is not None else config.data.dataset
    for version in reversed(model_registry.list_versions(model_base_path(config), config.push.model_name)):
        if version.metadata.get("dataset") not in (None, dataset):
            continue  # another dataset's model, judged on this test set, says nothing (push refuses the mix)
        if version.complete and model_identity(version.path) != own:
            return pushed_artifact(store, version)
    return None


def served_model(config: Config, workdir: Path, store: RunStore, upstream, inputs) -> Artifact | None:
    """What is served now: the version this run pushed, else the newest complete version in the base path."""

    push = upstream.get("push")
    if push is not None and "pushed_model" in push.outputs and Path(push.outputs["pushed_model"].uri).is_dir():
        return push.outputs["pushed_model"]
    versions = [v for v in model_registry.list_versions(model_base_path(config), config.push.model_name) if v.complete]
    return pushed_artifact(store, versions[-1]) if versions else None


def model_to_serve(config: Config, workdir: Path, store: RunStore, upstream, inputs) -> Artifact:
    found = served_model(config, workdir, store, upstream, inputs)
    if found is None:

        where = model_registry.model_dir(model_base_path(config), config.push.model_name)
        push = upstream.get("push")
        why = f" (this run's push: {push.properties.get('reason')})" if push is not None and push.properties.get("reason") else ""
        raise SkipStage(f"no model version is pushed under {where}{why}")
    return found


def model_to_score(config: Config, workdir: Path, store: RunStore, upstream, inputs) -> Artifact:
    """`score.model` when given (a SavedModel, or `<base>/<model>` for its newest version), else what is served;
    with `score.server`, the model that server serves (never a cache hit: its versions change behind it)."""
    if config.score.server:
        return Artifact(f"grpc://{config.score.server}/{config.score.server_model}", "ServedModel",
                        {"fingerprint": paths.new_run_id()})
    if config.score.model:
        model = Path(config.score.model)
        if not model.exists():
            raise SkipStage(f"score.model {config.score.model!r} does not exist; pass a SavedModel folder or "
                            "<model base path>/<model name>")
        return artifact(model.resolve(), "SavedModel")
    return model_to_serve(config, workdir, store, upstream, inputs)


def score_input(config: Config, workdir: Path, store: RunStore, upstream, inputs) -> Artifact | None:
    """Files given to score with `score.input_pattern`, fingerprinted by content when they are local, so a
    changed file is scored again rather than served from the cache; None for a split of the dataset."""
    pattern = config.score.input_pattern
    if not pattern:
        return None
    import glob
    import hashlib

    files = sorted(glob.glob(pattern)) if "://" not in pattern else []
    if len(files) == 1 and os.path.isdir(files[0]):  # a folder of images: its files
        files = sorted(os.path.join(d, n) for d, _, names in os.walk(files[0]) for n in names)
    digest = hashlib.sha256(pattern.encode())
    for f in files:
        if os.path.isfile(f):
            digest.update(f.encode() + b"\0" + fingerprint_path(f).encode())
    if not files:  # remote or nothing matched (score says which): never a cache hit
        digest.update(paths.new_run_id().encode())
    return Artifact(pattern, "ExternalData", {"fingerprint": digest.hexdigest()[:32], "files": len(files)})


def rollback_choice(config: Config, to: int | None):
    """(the version served now, the version to serve again): `to`, or the one before the newest. A PipelineError
    naming the model folder when there is nothing to roll back to."""
    base = model_base_path(config)
    versions = model_registry.list_versions(base, config.push.model_name)
    where = model_registry.model_dir(base, config.push.model_name)
    if len(versions) < 2:
        raise PipelineError(f"nothing to roll back to in {str(where)!r}: {len(versions)} version(s) pushed")
    served = versions[-1]
    if to is None:
        return served, versions[-2]
    found = [v for v in versions if v.version == to]
    if not found:
        known = ", ".join(str(v.version) for v in versions)
        raise PipelineError(f"version {to} is not in {str(where)!r}; it has: {known}")
    if found[0].version == served.version:
        raise PipelineError(f"version {to} is the newest and already served; nothing to roll back")
    return served, found[0]


def version_to_roll_back_to(to: int | None):
    """A resolver of the version a rollback copies: the store's record of it when it has one (so the copy's
    lineage leads back to the run that made it), chosen under the workdir lock."""

    def resolve(config: Config, workdir: Path, store: RunStore, upstream, inputs) -> Artifact:
        return pushed_artifact(store, rollback_choice(config, to)[1])

    return resolve
