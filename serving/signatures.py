"""Names shared across the wire: signature, input and output keys, model name.

The exporter writes them, the local server and the client speak them, the Beam scorer and the tests import
them. Change one here and every side changes together.
"""

import logging

log = logging.getLogger(__name__)

MODEL_NAME = "mnist"

IMAGE_SIZE = 28
NUM_CLASSES = 10

# serving_default: float32 [batch, 28, 28, 1] in [0, 1] -> probabilities, classes. Method tensorflow/serving/predict.
SERVING_DEFAULT = "serving_default"
IMAGE_INPUT = "image"
PROBABILITIES_OUTPUT = "probabilities"
CLASSES_OUTPUT = "classes"

# predict_png: encoded PNG bytes (string [batch]) -> the same outputs; decoding and scaling happen in the graph.
PNG_SIGNATURE = "predict_png"
PNG_INPUT = "image_png"

# classify: serialized tf.Example (string [batch]) -> classes (string [batch, 10]) and scores (float [batch, 10]),
# method tensorflow/serving/classify, keys as TF Serving's Classify API requires them.
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_INPUT = "inputs"
CLASSIFY_CLASSES_OUTPUT = "classes"
CLASSIFY_SCORES_OUTPUT = "scores"

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"

# tf.Example features, as TFDS's MNIST names them.
EXAMPLE_IMAGE_FEATURE = "image"  # PNG-encoded bytes
EXAMPLE_LABEL_FEATURE = "label"  # int64, optional
EXAMPLE_KEY_FEATURE = "key"  # bytes, optional

# Keras model input name (keras.Input(name=...)).
KERAS_INPUT_NAME = "image"

WARMUP_FILE = "tf_serving_warmup_requests"  # under <SavedModel>/assets.extra/

# The class names, one per line in class index order (UTF-8), under <SavedModel>/assets.extra/: what the
# `classify` signature answers as its classes, kept as a file so that whoever holds the model folder (the
# scorer, the evaluator, `versions`) reads them without loading the graph. TF Serving ignores the file.
CLASS_NAMES_FILE = "class_names.txt"


def default_class_names(num_classes: int = NUM_CLASSES) -> list[str]:
    """"0".."9": MNIST's names, and the names of a model exported before class names were recorded."""
    return [str(i) for i in range(num_classes)]


def class_names_path(saved_model_dir) -> str:
    return f"{str(saved_model_dir).rstrip('/')}/assets.extra/{CLASS_NAMES_FILE}"


def format_class_names(names) -> str:
    """The file's text; a ValueError for a name that cannot be one line, or a count other than NUM_CLASSES."""
    names = [str(n) for n in names]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} class names, got {len(names)}: {names!r}")
    for name in names:
        if not name or "\n" in name or "\r" in name:
            raise ValueError(f"class name {name!r} must be one non-empty line")
    return "".join(f"{n}\n" for n in names)


def read_class_names(saved_model_dir) -> list[str]:
    """The class names a SavedModel (an export or a pushed version) records, index order; "0".."9" when it
    records none (exported before class names existed) or the file is unusable (logged). Local paths and
    TensorFlow file system URLs both work."""
    path = class_names_path(saved_model_dir)
    try:
        if "://" in path:
            import tensorflow as tf

            if not tf.io.gfile.exists(path):
                return default_class_names()
            with tf.io.gfile.GFile(path, "rb") as fh:
                text = fh.read().decode("utf-8")
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except FileNotFoundError:
        return default_class_names()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read class names %s (%s); using 0..9", path, exc)
        return default_class_names()
    names = text.splitlines()
    if len(names) != NUM_CLASSES or not all(names):
        log.warning("%s holds %d names, not %d; using 0..9", path, len(names), NUM_CLASSES)
        return default_class_names()
    return names


def read_signature_defs(saved_model_dir: str) -> dict:
    """The SignatureDefs of a SavedModel's first MetaGraph, by key, read from its saved_model.pb alone (no
    load, no TensorFlow runtime). Local paths and TensorFlow file system URLs (gs://...) both work.

    Raises FileNotFoundError when there is no saved_model.pb, ValueError when it cannot be parsed or has no
    MetaGraph; each caller turns that into its own error with its own advice."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = f"{str(saved_model_dir).rstrip('/')}/saved_model.pb"
    if "://" in path:
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(path)
        try:
            with tf.io.gfile.GFile(path, "rb") as fh:
                data = fh.read()
        except tf.errors.OpError as exc:
            raise ValueError(f"saved_model.pb cannot be read ({exc.message})") from exc
    else:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ValueError(f"saved_model.pb cannot be read ({exc})") from exc
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"saved_model.pb cannot be parsed ({exc})") from exc
    if not proto.meta_graphs:
        raise ValueError("saved_model.pb has no MetaGraph")
    return dict(proto.meta_graphs[0].signature_def)
