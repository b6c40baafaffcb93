"""Push stage: a blessed SavedModel -> `<base>/<model_name>/<version>/`, TF Serving's layout, as TFX's Pusher.

    out = push.run(config.push, saved_model_dir, base_path, blessing=json.load(...), metadata={"run_id": run})
    out.pushed, out.version, out.version_dir, out.reason

- Only a blessed model is pushed, or any with `force`; "not blessed" is a recorded outcome (pushed=False).
- The version is an integer larger than any there (the newest + 1); an existing version is never touched.
- The copy is built in a hidden folder inside `<base>/<model_name>/` (same filesystem; TF Serving ignores
  names that are not integers), the pusher's record written into its `assets.extra/mnist_pipeline_push.json`,
  loaded there as TF Serving loads it (a Session whose variables the saver restores: serving.session_bundle)
  and checked (its warmup requests replayed, as TF Serving does before serving it; predictions on a few images
  equal to those of the source, whose signatures are checked too), and
  only then renamed into place: TF Serving never sees a partial version, nor one it could not run (an export
  written before the exporter checked this, pushed or rolled back to).
- The newest `keep_versions` versions are kept; older ones are renamed away (hidden) and then deleted.
- One model name holds one dataset's models: the record says which dataset each version came from, and a
  model of another dataset is refused (a Fashion-MNIST model would otherwise become the served "mnist").
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.atomic import atomic_write_json
from components.params import PushConfig
from components.portable import portable, root_holding
from pipeline.errors import ConfigError, ModelError
from serving import model_registry
from serving import signatures as sig

log = logging.getLogger(__name__)

# Every pushed version must carry these signatures, with these methods.
REQUIRED_SIGNATURES = {
    sig.SERVING_DEFAULT: sig.PREDICT_METHOD,
    sig.PNG_SIGNATURE: sig.PREDICT_METHOD,
    sig.CLASSIFY_SIGNATURE: sig.CLASSIFY_METHOD,
}
RECORD_FILE = "pushed.json"  # the outcome, pushed or not, in the push stage's folder
_TMP_PREFIX = ".tmp-push-"
_TRASH_PREFIX = ".tmp-remove-"
_CHECK_IMAGES = 8


@dataclass(frozen=True)
class PushOutput:
    pushed: bool
    reason: str
    version: int | None = None
    version_dir: Path | None = None
    removed_versions: tuple[int, ...] = ()
    record_path: Path | None = None


def run(
    config: PushConfig,
    saved_model_dir: Path,
    base_path: Path,
    *,
    blessing: Mapping[str, Any] | None,
    dataset: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    record_path: Path | None = None,
    check_images: np.ndarray | None = None,
    record_root: Path | None = None,
) -> PushOutput:
    """Push `saved_model_dir` under `base_path` if `blessing["blessed"]` (or `config.force`).

    `dataset`: the TFDS name of the data the model learned, recorded in the version; a ConfigError when
    `<base>/<model_name>/` holds versions of another dataset (None: not checked, e.g. a rollback's copy).
    `metadata`: extra fields for the version's record (run_id, accuracy, rolled_back_from, ...).
    `record_path`: where to write the outcome (pushed.json), pushed or not.
    `check_images`: float32 [n, h, w, c] images (the model's shape) for the prediction check; seeded random
    images when None.
    `record_root` (the workdir): pushed.json, and the version's record when `base_path` is inside it, name
    files inside it relative to it (None: absolute paths).
    """
    saved_model_dir, base_path = Path(saved_model_dir), Path(base_path)
    if not config.model_name:
        raise ConfigError("push.model_name is not set; pipeline.config.resolve_defaults gives the dataset's name")
    if dataset is not None:
        check_same_dataset(base_path, config.model_name, dataset)
    blessed = bool(blessing and blessing.get("blessed"))
    if not blessed and not config.force:
        why = blessing.get("reason", "no reason recorded") if blessing else "it was not evaluated"
        out = PushOutput(False, f"not pushed: the model is not blessed ({why}); push it anyway with --force")
        return _record(out, record_path, saved_model_dir, record_root)

    model_dir = _writable_model_dir(base_path, config.model_name)
    images = _check_images(check_images, saved_model_dir)
    reference = _checked_predictions(saved_model_dir, images)

    tmp = model_dir / f"{_TMP_PREFIX}{secrets.token_hex(4)}"
    try:
        shutil.copytree(saved_model_dir, tmp)
        version = _next_version(model_dir)
        record = {
            "model_name": config.model_name,
            "version": version,
            "pushed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "source": portable(saved_model_dir.resolve(), root_holding(base_path, record_root)),
            "blessed": blessed,
            "forced": not blessed,
            "blessing_reason": blessing.get("reason") if blessing else None,
            **({"dataset": dataset} if dataset is not None else {}),
            **dict(metadata or {}),
        }
        _write_metadata(tmp, record)
        copied = _predictions_as_tf_serving_runs_them(tmp, images, saved_model_dir)
        if not (np.array_equal(copied[0], reference[0]) and np.allclose(copied[1], reference[1], rtol=0, atol=1e-6)):
            raise ModelError(
                f"the copy of {os.fspath(saved_model_dir)!r} in {os.fspath(tmp)!r} predicts differently from the "
                "source; nothing was pushed"
            )
        version_dir = _rename_into_place(tmp, model_dir, version, record)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("pushed %s as version %d: %s", saved_model_dir, int(version_dir.name), version_dir)
    removed = _keep_newest(model_dir, config.keep_versions, config.model_name, base_path)
    reason = "pushed (blessed)" if blessed else "pushed with --force (not blessed)"
    out = PushOutput(True, reason, int(version_dir.name), version_dir, removed)
    return _record(out, record_path, saved_model_dir, record_root)


def check_same_dataset(base_path: Path, model_name: str, dataset: str) -> None:
    """A ConfigError when `<base>/<model_name>/` already holds versions pushed from another dataset than
    `dataset`: TF Serving would serve (and clients compare) two kinds of model under one name. Versions that
    record no dataset (pushed by hand or by an older pusher) do not count."""
    others: dict[str, list[int]] = {}
    for version in model_registry.list_versions(base_path, model_name):
        found = version.metadata.get("dataset")
        if found and found != dataset:
            others.setdefault(str(found), []).append(version.version)
    if others:
        held = "; ".join(f"{name} (version{'s' if len(v) > 1 else ''} {', '.join(map(str, v))})"
                         for name, v in sorted(others.items()))
        where = os.fspath(model_registry.model_dir(base_path, model_name))
        raise ConfigError(
            f"refusing to push a {dataset} model as {model_name!r}: {where!r} holds versions of another dataset: "
            f"{held}; push it under its own name with --model-name (push.model_name), e.g. {dataset!r}, "
            f"which is the default for --dataset {dataset}"
        )


def _writable_model_dir(base_path: Path, model_name: str) -> Path:
    """`<base>/<model_name>/`, created if needed; a ConfigError naming the base path when that cannot be."""
    model_dir = model_registry.model_dir(base_path, model_name)
    for folder in (base_path, model_dir):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"model base path {os.fspath(folder)!r} is a file, not a folder; "
                "point push.model_base_path (--model-base-path) at a folder"
            )
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {os.fspath(model_dir)!r} under the model base path ({exc.strerror or exc}); "
            "choose a writable push.model_base_path (--model-base-path)"
        ) from exc
    if not os.access(model_dir, os.W_OK | os.X_OK):
        raise ConfigError(
            f"model base path {os.fspath(model_dir)!r} is not writable; "
            "fix its permissions or choose another push.model_base_path (--model-base-path)"
        )
    return model_dir


def _check_images(images: np.ndarray | None, saved_model_dir: Path) -> np.ndarray:
    if images is None:  # seeded stand-ins of the shape the model records (the dataset's)
        rng = np.random.default_rng(0)
        return rng.random((_CHECK_IMAGES, *sig.read_image_shape(saved_model_dir)), dtype=np.float32)
    return np.asarray(images, np.float32)[:_CHECK_IMAGES]


def check_signatures(saved_model_dir: Path) -> None:
    """Every required signature is in saved_model.pb with its method; a ModelError naming the path if not."""
    where = os.fspath(saved_model_dir)
    try:
        defs = sig.read_signature_defs(where)
    except FileNotFoundError as exc:
        raise ModelError(f"{where!r} is not a SavedModel (no saved_model.pb); run `mnist-pipeline export` first") from exc
    except ValueError as exc:
        raise ModelError(f"SavedModel {where!r} is corrupt: {exc}") from exc
    for name, method in REQUIRED_SIGNATURES.items():
        if name not in defs:
            raise ModelError(f"SavedModel {where!r} lacks the {name!r} signature; export it with `mnist-pipeline export`")
        if defs[name].method_name != method:
            raise ModelError(f"SavedModel {where!r}: signature {name!r} has method {defs[name].method_name!r}, not {method!r}")


def _checked_predictions(saved_model_dir: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probabilities) of serving_default on `images`, after checking the signatures."""
    import tensorflow as tf

    check_signatures(saved_model_dir)
    where = os.fspath(saved_model_dir)
    try:
        loaded = tf.saved_model.load(where)
        out = loaded.signatures[sig.SERVING_DEFAULT](**{sig.IMAGE_INPUT: tf.constant(images)})
    except Exception as exc:  # missing variables, bad graph, ...: TF raises many kinds
        raise ModelError(f"SavedModel {where!r} is corrupt or partial: it cannot be loaded and run ({exc})") from exc
    return out[sig.CLASSES_OUTPUT].numpy(), out[sig.PROBABILITIES_OUTPUT].numpy()


def _predictions_as_tf_serving_runs_them(copy: Path, images: np.ndarray, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probabilities) of the copy's serving_default on `images`, run as TF Serving runs it, after its
    warmup requests (TF Serving replays them before it serves a version, and refuses the version if one fails); a
    ModelError naming `source` when TF Serving could not run it (tf.saved_model.load may answer where it cannot)."""
    from serving.errors import ServingError
    from serving.session_bundle import SessionBundle, read_warmup_requests, replay_warmup

    try:
        with SessionBundle(copy) as bundle:
            replay_warmup(bundle, read_warmup_requests(copy))
            out = bundle.run(sig.SERVING_DEFAULT, {sig.IMAGE_INPUT: images})
    except ServingError as exc:
        raise ModelError(
            f"{os.fspath(source)!r} would fail in TF Serving, so nothing was pushed: {exc}. Export it again with "
            "`mnist-pipeline export` and push that (exports written before the exporter checked this can track "
            "Keras 3 variables that TF Serving cannot restore: keras-team/keras#20096)"
        ) from exc
    return out[sig.CLASSES_OUTPUT], out[sig.PROBABILITIES_OUTPUT]


def _next_version(model_dir: Path) -> int:
    """One more than the largest integer folder there (hidden temporary folders do not count)."""
    numbers = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    return max(numbers, default=0) + 1


def _write_metadata(version_dir: Path, record: Mapping[str, Any]) -> None:
    path = model_registry.push_metadata_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def _rename_into_place(tmp: Path, model_dir: Path, version: int, record: dict[str, Any]) -> Path:
    """Rename `tmp` to `<model_dir>/<version>`; if another push took that number first, take the next one.

    `os.rename` onto an existing non-empty folder fails, so an existing version is never replaced; an
    existing (even empty) folder is also skipped before trying.
    """
    for _ in range(100):
        target = model_dir / str(version)
        if not target.exists():
            try:
                os.rename(tmp, target)
                return target
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        version = _next_version(model_dir)
        record["version"] = version
        _write_metadata(tmp, record)
    raise ModelError(f"could not find a free version number in {os.fspath(model_dir)!r}")


def _keep_newest(model_dir: Path, keep: int, model_name: str, base_path: Path) -> tuple[int, ...]:
    """Remove all but the newest `keep` versions: each is renamed to a hidden name first, then deleted."""
    versions = model_registry.list_versions(base_path, model_name)
    removed = []
    for old in versions[: max(0, len(versions) - keep)]:
        trash = model_dir / f"{_TRASH_PREFIX}{old.version}-{secrets.token_hex(4)}"
        os.rename(old.path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(old.version)
        log.info("removed version %d (keeping the newest %d)", old.version, keep)
    return tuple(removed)


def _record(out: PushOutput, record_path: Path | None, source: Path, record_root: Path | None) -> PushOutput:
    if record_path is None:
        log.info("%s", out.reason)
        return out
    record_path = Path(record_path)
    root = root_holding(record_path, record_root)
    payload = {
        "pushed": out.pushed,
        "reason": out.reason,
        "version": out.version,
        "version_dir": portable(out.version_dir, root) if out.version_dir else None,
        "removed_versions": list(out.removed_versions),
        "source": portable(source, root),
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(record_path, payload)
    log.info("%s; wrote %s", out.reason, record_path)
    return PushOutput(out.pushed, out.reason, out.version, out.version_dir, out.removed_versions, record_path)
