"""Export stage: a trained Keras model -> a TF2 SavedModel that TF Serving serves as it is.

    out = export.run(train_dir / train.MODEL_FILE, export_dir / export.SAVED_MODEL_DIR, warmup_images=x[:4])

Signatures (names from `serving.signatures`, so server, client, scorer and tests agree):

- `serving_default` (tensorflow/serving/predict): `image` float32 [batch, h, w, c] in [0, 1] (the model's input
  shape: the dataset's, 28x28x1 for MNIST, 32x32x3 for CIFAR-10)
  -> `probabilities` float32 [batch, 10], `classes` int64 [batch];
- `predict_png` (tensorflow/serving/predict): `image_png` string [batch] of encoded PNGs (or JPEGs), decoded
  with the model's channels and scaled in the graph by `components.preprocessing.decode_and_scale_pngs` -> the
  same outputs (a grey image for a colour model, or the reverse, is refused, not converted);
- `classify` (tensorflow/serving/classify): `inputs` string [batch] of serialized tf.Example (`image`: PNG
  bytes, `label`: int64, ignored) -> `classes` string [batch, 10] (the class names in index order: "0".."9"
  for MNIST, "T-shirt/top".."Ankle boot" for Fashion-MNIST), `scores` float32 [batch, 10], as TF Serving's
  Classify API requires.

The class names also go to `assets.extra/class_names.txt` (`serving.signatures.CLASS_NAMES_FILE`) and the input
shape to `assets.extra/image_shape.txt` (`IMAGE_SHAPE_FILE`), so whoever holds the folder reads them without
loading the graph (`serving.signatures.read_class_names`, `read_image_shape`).

TF2's saver writes method_name tensorflow/serving/predict for every signature; the `classify` SignatureDef is
rewritten in saved_model.pb after saving (and the fingerprint recomputed). Warmup requests for every
signature go to `assets.extra/tf_serving_warmup_requests` (a TFRecord of `PredictionLog`). The SavedModel
is built in a temporary folder beside `export_dir` and renamed into place, so a half-written export is
never visible.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import atomic_write
from pipeline.errors import ModelError
from serving import signatures as sig

log = logging.getLogger(__name__)

# Warmup requests replay these many images per signature (TF Serving replays each record once at load).
_WARMUP_BATCH = 4


@dataclass(frozen=True)
class ExportOutput:
    saved_model_dir: Path
    signature_names: tuple[str, ...]
    warmup_path: Path
    class_names: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = sig.DEFAULT_IMAGE_SHAPE  # (height, width, channels) the model takes


SAVED_MODEL_DIR = "saved_model"  # the stage's output folder holds the SavedModel under this name


def run(model_path: Path, export_dir: Path, *, warmup_images: np.ndarray | None = None,
        class_names: Sequence[str] | None = None) -> ExportOutput:
    """Export the Keras model at `model_path` as a SavedModel at `export_dir` (replaced if it exists).

    `warmup_images`: a few images of the model's input shape (float32 [n, h, w, c] in [0, 1], or uint8) for
    the warmup requests; blank images when None. The input shape is the Keras model's (the dataset's).
    `class_names`: the dataset's names of classes 0..9 (TFDS's label
    names); "0".."9" when None.
    """
    import tensorflow as tf

    model_path, export_dir = Path(model_path), Path(export_dir)
    names = list(class_names) if class_names is not None else sig.default_class_names()
    try:
        names_text = sig.format_class_names(names)
    except ValueError as exc:
        raise ModelError(f"cannot export with these class names: {exc}") from exc
    model = load_keras_model(model_path)
    try:
        shape = tuple(int(d) for d in model.input_shape[1:])
        shape_text = sig.format_image_shape(shape)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"trained model {os.fspath(model_path)!r} takes input {model.input_shape}, not images "
                         f"[batch, height, width, 1 or 3 channels] ({exc})") from exc
    images = _warmup_images(warmup_images, shape)

    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = export_dir.parent / f".{export_dir.name}.tmp-{secrets.token_hex(4)}"
    try:
        module = _serving_module_class(shape)(model, names)  # class built here so TF is imported lazily
        tf.saved_model.save(
            module,
            os.fspath(tmp),
            signatures={
                sig.SERVING_DEFAULT: module.predict_images,
                sig.PNG_SIGNATURE: module.predict_png,
                sig.CLASSIFY_SIGNATURE: module.classify,
            },
        )
        set_signature_methods(tmp, {sig.CLASSIFY_SIGNATURE: sig.CLASSIFY_METHOD})
        warmup = tmp / "assets.extra" / sig.WARMUP_FILE
        write_warmup_requests(warmup, images)
        atomic_write(Path(sig.class_names_path(tmp)), names_text.encode("utf-8"))
        atomic_write(Path(sig.image_shape_path(tmp)), shape_text.encode("ascii"))
        _check_as_tf_serving_runs_it(tmp, export_dir)
        _replace_dir(tmp, export_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    signatures = (sig.SERVING_DEFAULT, sig.PNG_SIGNATURE, sig.CLASSIFY_SIGNATURE)
    log.info("wrote SavedModel %s (signatures: %s; %s images; classes: %s)", export_dir, ", ".join(signatures),
             sig.describe_image(shape), ", ".join(names))
    return ExportOutput(export_dir, signatures, export_dir / "assets.extra" / sig.WARMUP_FILE, tuple(names), shape)


def _check_as_tf_serving_runs_it(saved_model_dir: Path, export_dir: Path) -> None:
    """TF Serving loads a version into a Session, restores its variables with the saver and replays its warmup
    requests before serving it; do the same, so that a model TF Serving would refuse is not exported."""
    from serving.errors import ServingError
    from serving.session_bundle import replay_warmup_in_session

    try:
        replay_warmup_in_session(saved_model_dir)
    except ServingError as exc:
        raise ModelError(f"the SavedModel for {os.fspath(export_dir)!r} would fail in TF Serving, so nothing was "
                         f"exported: {exc}") from exc


def load_keras_model(model_path: Path):
    """The trained Keras model; a ModelError naming the path when it is missing or unreadable."""
    import keras

    import components.augment  # noqa: F401  (registers the augmentation layer the default model has)

    if not model_path.is_file():
        raise ModelError(f"trained model {os.fspath(model_path)!r} does not exist; run `mnist-pipeline train` first")
    try:
        return keras.models.load_model(os.fspath(model_path), compile=False)
    except Exception as exc:  # keras raises ValueError, OSError, zipfile errors, ...
        raise ModelError(f"trained model {os.fspath(model_path)!r} cannot be loaded ({exc}); train it again") from exc


def _serving_module_class(shape: tuple[int, int, int]):
    import tensorflow as tf

    from components.preprocessing import decode_and_scale_pngs

    image_spec = tf.TensorSpec([None, *shape], tf.float32, name=sig.IMAGE_INPUT)
    png_spec = tf.TensorSpec([None], tf.string, name=sig.PNG_INPUT)
    examples_spec = tf.TensorSpec([None], tf.string, name=sig.CLASSIFY_INPUT)

    class ServingModule(tf.Module):
        """The three serving functions over the Keras model, and the model's variables (saved once each)."""

        def __init__(self, model, class_names):
            super().__init__(name="mnist_serving")
            # What is saved is the tf.Variable behind each Keras variable (the random layers' seed generators
            # too, which Keras 3 keeps outside the attributes TF's tracker follows), not the Keras model: a Keras
            # variable is saved as a copy of its own, which TF's restore op fills while the functions read the
            # original, so a server that loads the graph into a Session and restores it that way (TF Serving,
            # `saved_model_cli run`) fails every call with "Could not find variable ..." (keras-team/keras#20096)
            # although tf.saved_model.load answers. The model is called through a closure, which is not tracked.
            self.model_variables = [_tf_variable(v) for v in model.variables]
            self._probabilities = lambda images: tf.cast(model(images, training=False), tf.float32)
            self.class_names = tf.constant(list(class_names))

        def _outputs(self, images):
            probabilities = self._probabilities(images)
            return {
                sig.PROBABILITIES_OUTPUT: probabilities,
                sig.CLASSES_OUTPUT: tf.argmax(probabilities, axis=-1, output_type=tf.int64),
            }

        @tf.function(input_signature=[image_spec])
        def predict_images(self, image):
            return self._outputs(image)

        @tf.function(input_signature=[png_spec])
        def predict_png(self, image_png):
            return self._outputs(decode_and_scale_pngs(image_png, shape))

        @tf.function(input_signature=[examples_spec])
        def classify(self, inputs):
            features = tf.io.parse_example(
                inputs, {sig.EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
            )  # `label` (and `key`) may be present; they are not needed and are ignored.
            images = decode_and_scale_pngs(features[sig.EXAMPLE_IMAGE_FEATURE], shape)
            scores = self._outputs(images)[sig.PROBABILITIES_OUTPUT]
            classes = tf.tile(self.class_names[tf.newaxis, :], [tf.shape(scores)[0], 1])
            return {sig.CLASSIFY_CLASSES_OUTPUT: classes, sig.CLASSIFY_SCORES_OUTPUT: scores}

    return ServingModule


def _tf_variable(variable):
    """The tf.Variable that holds a Keras variable's value (read outside any autocast scope, so not a cast copy)."""
    import tensorflow as tf

    value = getattr(variable, "value", variable)
    if not isinstance(value, tf.Variable):
        raise ModelError(f"cannot export variable {getattr(variable, 'path', variable)!r}: it is not backed by a "
                         f"tf.Variable ({type(value).__name__}); export with Keras's TensorFlow backend")
    return value


def set_signature_methods(saved_model_dir: Path, methods: dict[str, str]) -> None:
    """Rewrite the method_name of SignatureDefs in saved_model.pb (atomically) and refresh fingerprint.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = Path(saved_model_dir) / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(pb_path.read_bytes())
    for meta_graph in proto.meta_graphs:
        for name, method in methods.items():
            if name not in meta_graph.signature_def:
                raise ModelError(f"SavedModel {os.fspath(saved_model_dir)!r} has no signature {name!r}")
            meta_graph.signature_def[name].method_name = method
    atomic_write(pb_path, proto.SerializeToString())
    _refresh_fingerprint(Path(saved_model_dir))


def _refresh_fingerprint(saved_model_dir: Path) -> None:
    """fingerprint.pb holds a checksum of saved_model.pb; recompute it after the rewrite so it stays true."""
    fingerprint = saved_model_dir / "fingerprint.pb"
    if not fingerprint.exists():
        return
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(os.fspath(saved_model_dir))
    except Exception as exc:  # a private TF API: if it moves, a missing fingerprint beats a stale one
        log.warning("could not recompute %s (%s); removing it", fingerprint, exc)
        fingerprint.unlink()


def _warmup_images(images: np.ndarray | None, shape=sig.DEFAULT_IMAGE_SHAPE) -> np.ndarray:
    """float32 [n, *shape] in [0, 1], at most _WARMUP_BATCH images."""
    if images is None:
        return np.zeros((_WARMUP_BATCH, *shape), np.float32)
    images = np.asarray(images)
    if images.ndim == 3 and shape[2] == 1:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[1:] != tuple(shape) or len(images) == 0:
        raise ModelError(f"warmup images must be [n, {', '.join(map(str, shape))}] with n >= 1 (the model's "
                         f"input), got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    return np.clip(images[:_WARMUP_BATCH].astype(np.float32), 0.0, 1.0)


def encode_pngs(images: np.ndarray) -> list[bytes]:
    """float32 [n, h, w, c] in [0, 1] -> PNG bytes per image (what clients and the classify inputs carry)."""
    import tensorflow as tf

    pixels = np.round(np.asarray(images) * 255.0).astype(np.uint8)
    return [tf.io.encode_png(p).numpy() for p in pixels]


def write_warmup_requests(path: Path, images: np.ndarray) -> None:
    """One PredictionLog per signature: PredictRequests for serving_default and predict_png, a
    ClassificationRequest for classify, each over `images`, in a TFRecord as TF Serving reads it."""
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

    pngs = encode_pngs(images)
    records = []

    request = predict_pb2.PredictRequest()
    request.model_spec.name = sig.MODEL_NAME
    request.model_spec.signature_name = sig.SERVING_DEFAULT
    request.inputs[sig.IMAGE_INPUT].CopyFrom(tf.make_tensor_proto(images, dtype=tf.float32))
    records.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))

    request = predict_pb2.PredictRequest()
    request.model_spec.name = sig.MODEL_NAME
    request.model_spec.signature_name = sig.PNG_SIGNATURE
    request.inputs[sig.PNG_INPUT].CopyFrom(tf.make_tensor_proto(pngs, dtype=tf.string, shape=[len(pngs)]))
    records.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = sig.MODEL_NAME
    classify.model_spec.signature_name = sig.CLASSIFY_SIGNATURE
    for png in pngs:
        classify.input.example_list.examples.add().features.feature[sig.EXAMPLE_IMAGE_FEATURE].bytes_list.value.append(png)
    records.append(
        prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify))
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(os.fspath(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename the finished `src` to `dst`; an existing `dst` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{secrets.token_hex(4)}"
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
