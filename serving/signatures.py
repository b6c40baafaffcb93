"""Names shared across the wire: signature, input and output keys, model name.

The exporter writes them, the local server and the client speak them, the Beam scorer and the tests import
them. Change one here and every side changes together.
"""

import logging

log = logging.getLogger(__name__)

MODEL_NAME = "mnist"

IMAGE_SIZE = 28
NUM_CLASSES = 10
# (height, width, channels) of a model that records no shape (exported before shapes were recorded): MNIST's.
DEFAULT_IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)

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


# The input image shape "height width channels" (one line, e.g. "32 32 3"), under <SavedModel>/assets.extra/:
# the dataset's (TFDS info), so that the server, the client and the scorer check and decode images as the model
# takes them without loading the graph. A model without the file takes DEFAULT_IMAGE_SHAPE.
IMAGE_SHAPE_FILE = "image_shape.txt"


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


def _read_asset_text(path: str) -> str | None:
    """The text of a file under assets.extra, or None when it is absent or unusable (logged). Local paths and
    TensorFlow file system URLs both work."""
    try:
        if "://" in path:
            import tensorflow as tf

            if not tf.io.gfile.exists(path):
                return None
            with tf.io.gfile.GFile(path, "rb") as fh:
                return fh.read().decode("utf-8")
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s (%s); using the default", path, exc)
        return None


def read_class_names(saved_model_dir) -> list[str]:
    """The class names a SavedModel (an export or a pushed version) records, index order; "0".."9" when it
    records none (exported before class names existed) or the file is unusable (logged)."""
    path = class_names_path(saved_model_dir)
    text = _read_asset_text(path)
    if text is None:
        return default_class_names()
    names = text.splitlines()
    if len(names) != NUM_CLASSES or not all(names):
        log.warning("%s holds %d names, not %d; using 0..9", path, len(names), NUM_CLASSES)
        return default_class_names()
    return names


def image_shape_path(saved_model_dir) -> str:
    return f"{str(saved_model_dir).rstrip('/')}/assets.extra/{IMAGE_SHAPE_FILE}"


def format_image_shape(shape) -> str:
    """The file's text; a ValueError unless `shape` is (height, width, channels) with 1 or 3 channels."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        raise ValueError(f"image shape must be (height, width, 1 or 3 channels), got {shape}")
    return " ".join(str(d) for d in shape) + "\n"


def read_image_shape(saved_model_dir) -> tuple[int, int, int]:
    """(height, width, channels) of the images a SavedModel takes; DEFAULT_IMAGE_SHAPE (28, 28, 1) when it
    records none (exported before shapes were recorded) or the file is unusable (logged)."""
    path = image_shape_path(saved_model_dir)
    text = _read_asset_text(path)
    if text is None:
        return DEFAULT_IMAGE_SHAPE
    try:
        format_image_shape(text.split())
        height, width, channels = (int(d) for d in text.split())
    except ValueError:
        log.warning("%s holds %r, not 'height width channels'; using %s", path, text.strip(), DEFAULT_IMAGE_SHAPE)
        return DEFAULT_IMAGE_SHAPE
    return height, width, channels


def image_shape_of(signature_defs) -> tuple[int, int, int]:
    """(height, width, channels) of serving_default's image input in SignatureDefs (a SavedModel's, or a server's
    GetModelMetadata answer: TF Serving's own record of the shape); DEFAULT_IMAGE_SHAPE when it does not say."""
    signature = signature_defs.get(SERVING_DEFAULT)
    if signature is None or IMAGE_INPUT not in signature.inputs:
        return DEFAULT_IMAGE_SHAPE
    dims = [d.size for d in signature.inputs[IMAGE_INPUT].tensor_shape.dim]
    return tuple(dims[1:]) if len(dims) == 4 and min(dims[1:]) > 0 else DEFAULT_IMAGE_SHAPE


def describe_image(shape) -> str:
    """ "28x28 grey", "32x32 colour (RGB)" (width x height): how errors name an image shape."""
    height, width, channels = shape
    return f"{width}x{height} {'grey' if channels == 1 else 'colour (RGB)' if channels == 3 else f'{channels}-channel'}"


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
