"""Names shared across the wire: signature, input and output keys, model name.

The exporter writes them, the local server and the client speak them, the Beam scorer and the tests import
them. Change one here and every side changes together.
"""

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
