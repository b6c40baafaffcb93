"""The model a scoring job uses, checked before the job starts: a local SavedModel, or a model TF Serving serves.

    ref = resolve_model("artifacts/serving/models/mnist")   # ModelRef(<base>/mnist/<newest>, "mnist", newest)
    check_saved_model(ref.saved_model_dir)                  # signature, and every variable readable
    check_server(ServerRef("localhost:8500"))               # the served model is available

docs/scoring.md promises that a bad model is reported before the job starts: a missing or unreadable
saved_model.pb, a missing signature, and truncated or corrupt variables (every tensor of the variables
checkpoint is read, which checks its checksum; a few MB, well under a second) all raise `ModelError`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from components.score.options import ServerRef
from pipeline.errors import ModelError
from serving import model_registry
from serving import signatures as sig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    saved_model_dir: str | None  # None when a server scores (the SavedModel is the server's)
    name: str
    version: int | None  # the integer folder of TF Serving's layout; None for a bare SavedModel dir
    # The SavedModel's assets.extra/class_names.txt ("0".."9" for MNIST); when a server scores, the names its
    # classify signature answers.
    class_names: tuple[str, ...] = tuple(sig.default_class_names())
    # (height, width, channels) of the images the model takes: the SavedModel's assets.extra/image_shape.txt,
    # or the served serving_default input (GetModelMetadata); the readers decode and check rows to it.
    image_shape: tuple[int, int, int] = sig.DEFAULT_IMAGE_SHAPE


def _join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def resolve_model(path: str | os.PathLike) -> ModelRef:
    """A SavedModel dir, or a model base path `<base>/<model>` meaning its newest integer version (resolved by
    `serving.model_registry` for local paths, by listing the folder for remote ones such as gs://)."""
    import tensorflow as tf

    path = os.fspath(path)
    gfile = tf.io.gfile
    if gfile.exists(_join(path, "saved_model.pb")):
        base, leaf = os.path.split(path.rstrip("/"))
        if model_registry.parse_version(leaf) is not None:
            return ModelRef(path, os.path.basename(base) or sig.MODEL_NAME, int(leaf))
        return ModelRef(path, sig.MODEL_NAME, None)
    if not gfile.isdir(path):
        raise ModelError(
            f"model {path!r} does not exist; give a SavedModel folder or a model base path <base>/<model> "
            f"(run `mnist-pipeline push` to fill the workdir's)"
        )
    name = os.path.basename(path.rstrip("/")) or sig.MODEL_NAME
    if "://" not in path:
        newest = model_registry.newest_version(os.path.dirname(path.rstrip("/")) or ".", name)
        version = newest.version if newest is not None and newest.complete else None
    else:
        versions = sorted(v for v in (model_registry.parse_version(n.rstrip("/")) for n in gfile.listdir(path))
                          if v is not None)
        version = versions[-1] if versions and gfile.exists(_join(path, str(versions[-1]), "saved_model.pb")) else None
    if version is None:
        raise ModelError(
            f"model {path!r} is neither a SavedModel (no saved_model.pb) nor a model base path whose newest "
            f"<integer version>/ holds a saved_model.pb"
        )
    return ModelRef(_join(path, str(version)), name, version)


def check_signature(saved_model_dir: str) -> None:
    """The SavedModel has `serving_default` taking `image` float32 and giving probabilities and classes."""
    try:
        signatures = sig.read_signature_defs(saved_model_dir)
    except (OSError, ValueError) as exc:
        raise ModelError(f"SavedModel {saved_model_dir!r} cannot be read ({exc}); export it again") from exc
    if sig.SERVING_DEFAULT not in signatures:
        raise ModelError(
            f"SavedModel {saved_model_dir!r} has no {sig.SERVING_DEFAULT!r} signature "
            f"(it has: {', '.join(signatures) or 'none'}); export it with `mnist-pipeline export`"
        )
    signature = signatures[sig.SERVING_DEFAULT]
    missing = [f"input {sig.IMAGE_INPUT!r}"] if sig.IMAGE_INPUT not in signature.inputs else []
    missing += [f"output {k!r}" for k in (sig.PROBABILITIES_OUTPUT, sig.CLASSES_OUTPUT) if k not in signature.outputs]
    if missing:
        raise ModelError(
            f"SavedModel {saved_model_dir!r}: signature {sig.SERVING_DEFAULT!r} lacks {', '.join(missing)}; "
            f"export it with `mnist-pipeline export`"
        )


def check_variables(saved_model_dir: str) -> None:
    """Every tensor of the SavedModel's variables checkpoint reads back (sizes and checksums): a truncated or
    corrupt variables file is found here, not by the first worker that loads the model mid-job."""
    import tensorflow as tf

    prefix = _join(saved_model_dir, "variables", "variables")
    if not tf.io.gfile.exists(prefix + ".index"):
        return  # a SavedModel without variables
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as exc:  # DataLossError, OutOfRangeError, NotFoundError, ...
        first = (getattr(exc, "message", None) or str(exc)).strip().splitlines()[:1]
        raise ModelError(
            f"SavedModel {saved_model_dir!r}: its variables cannot be read ({type(exc).__name__}: "
            f"{first[0] if first else ''}); the files are truncated or corrupt: export or push the model again"
        ) from exc


def check_saved_model(saved_model_dir: str) -> None:
    check_signature(saved_model_dir)
    check_variables(saved_model_dir)


def check_server(server: ServerRef) -> ModelRef:
    """The served model answers GetModelStatus with an available version; its ModelRef (version: the one asked
    for, or None meaning whichever the server picks; rows carry the version that answered)."""
    from components.beam_model import connect_to
    from serving.errors import ServingError

    with connect_to(server, timeout=min(server.timeout, 10.0)) as client:
        try:
            statuses = client.get_model_status(version=server.version, version_label=server.version_label)
            available = [s.version for s in statuses if s.state == "AVAILABLE"]
            log.info("server %s serves %s versions %s", server.address, server.model_name, available)
            if not available:
                raise ServingError(
                    f"model {server.model_name!r} has no available version "
                    f"({', '.join(f'{s.version} {s.state}' for s in statuses) or 'none'}); wait until it is loaded "
                    f"or check --server-model, --server-version, --server-version-label")
            # The served model's image shape, as TF Serving reports its serving_default input.
            meta = client.get_model_metadata(version=server.version, version_label=server.version_label)
        except ServingError as exc:
            raise ServingError(f"scoring server {server.address}: {exc}", getattr(exc, "code", None)) from exc
        shape = sig.image_shape_of(meta.signature_defs)
        names = _served_class_names(client, server, shape)
    return ModelRef(None, server.model_name, server.version, class_names=names, image_shape=shape)


def _served_class_names(client, server: ServerRef, shape) -> tuple[str, ...]:
    """The served model's class names, as its classify signature answers them (TF Serving's Classify API names
    the classes; the names file is the server's): one request with a blank image of the model's shape.
    "0".."9" when the model has no such signature or the answer is not ten names (logged)."""
    import numpy as np
    import tensorflow as tf

    from components.examples import make_example
    from serving.errors import ServingError

    blank = tf.io.encode_png(np.zeros(shape, np.uint8)).numpy()
    try:
        answer = client.classify([make_example(blank)], version=server.version, version_label=server.version_label)
        names = tuple(str(n) for n in answer[sig.CLASSIFY_CLASSES_OUTPUT][0])
    except (ServingError, KeyError, IndexError) as exc:
        log.warning("server %s: no class names from %s's classify signature (%s); rows name classes 0..9",
                    server.address, server.model_name, exc)
        return tuple(sig.default_class_names())
    return names if len(names) == sig.NUM_CLASSES else tuple(sig.default_class_names())
