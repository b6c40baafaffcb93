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
