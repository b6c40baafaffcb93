"""A pandas UDF that scores a Spark DataFrame's image column with a pushed model version, in the spirit of
Spark's `predict_batch_udf` and MLflow's `spark_udf`: for people who already have a DataFrame.

    from components.score.spark_udf import prediction_udf

    predict = prediction_udf("artifacts/serving/models/mnist")        # newest version, or a SavedModel dir
    scored = df.withColumn("prediction", predict("image"))             # PNG/JPEG bytes, or h*w*c pixels
    scored.select("key", "prediction.predicted_class", "prediction.probabilities")

The model's signatures decide what the column may hold and what comes out: `serving_default` takes the
model's image (28x28x1 for MNIST: a column of 784 integers 0-255, row-major, an array, e.g.
`F.array(*pixel_columns)`; 32x32x3 for CIFAR-10: 3,072 in row, column, channel order), and
encoded images (binary: PNG or JPEG) are decoded with the scoring job's own decoder before it; the output is a
struct of the signature's outputs (predicted_class from `classes`, probabilities from `probabilities`), the
class name from the model's class names, and `error`: null, or the reason a row could not be scored (an
undecodable image, another size, a bad pixel), whose other fields are then null. Rows arrive in Arrow batches
(spark.sql.execution.arrow.maxRecordsPerBatch, 10,000 by default); the model is loaded once per Python worker.
"""

from __future__ import annotations

import numpy as np

from serving import signatures as sig

_OUTPUT_TYPES = {1: "float", 2: "double", 3: "int", 9: "bigint"}  # TensorFlow DataType enum -> Spark SQL


def _output_fields(signature) -> list[tuple[str, str]]:
    """(name, Spark SQL type) of the prediction struct, from the serving signature's outputs."""
    fields = []
    for name, column in ((sig.CLASSES_OUTPUT, "predicted_class"), (sig.PROBABILITIES_OUTPUT, "probabilities")):
        spec = signature.outputs[name]
        kind = _OUTPUT_TYPES.get(spec.dtype, "double")
        kind = "bigint" if name == sig.CLASSES_OUTPUT else kind
        rank = len(spec.tensor_shape.dim)
        fields.append((column, f"array<{kind}>" if rank > 1 else kind))
    return fields + [("predicted_class_name", "string"), ("error", "string")]


def prediction_udf(model: str):
    """A pandas UDF scoring an image column with `model` (a model base path <base>/<model>: its newest version,
    or a SavedModel folder); see the module docstring. The model is checked here, on the driver."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    from components.score.model import check_saved_model, resolve_model

    ref = resolve_model(model)
    check_saved_model(ref.saved_model_dir)
    signatures = sig.read_signature_defs(ref.saved_model_dir)
    signature, shape = signatures[sig.SERVING_DEFAULT], sig.image_shape_of(signatures)
    fields = _output_fields(signature)
    schema = ", ".join(f"{name} {kind}" for name, kind in fields)
    saved_model_dir, class_names = ref.saved_model_dir, tuple(sig.read_class_names(ref.saved_model_dir))

    def predict(images):
        return predict_series(saved_model_dir, class_names, images, shape)

    predict.__annotations__ = {"images": pd.Series, "return": pd.DataFrame}  # Series -> struct: a scalar pandas UDF
    return pandas_udf(predict, returnType=schema)


def _images(values, shape=sig.DEFAULT_IMAGE_SHAPE) -> list:
    """A column's values -> per row a uint8 `shape` image (the model's) or the reason it is not one."""
    from components.score.decode import pixel_rows
    from components.score.spark_worker import image_decoder

    out: list = [None] * len(values)
    encoded = [i for i, v in enumerate(values) if isinstance(v, (bytes, bytearray, memoryview))]
    if encoded:
        for i, result in zip(encoded, image_decoder(shape).decode([bytes(values[i]) for i in encoded])):
            out[i] = result
    for i, v in enumerate(values):
        if out[i] is not None:
            continue
        if v is None:
            out[i] = "missing image: null"
            continue
        pixels = np.asarray(v, dtype=np.float64).reshape(-1)
        if pixels.size != int(np.prod(shape)):
            out[i] = f"wrong size: {pixels.size} pixels, expected {int(np.prod(shape))} ({sig.describe_image(shape)})"
            continue
        out[i] = pixel_rows(pixels[None, :], [""], shape)[0][0]
    return out


def predict_series(saved_model_dir: str, class_names: tuple[str, ...], images, shape=sig.DEFAULT_IMAGE_SHAPE):
    """One Arrow batch of the image column (a pandas Series) -> a DataFrame of the prediction struct's fields."""
    import pandas as pd

    from components.score.spark_worker import predict

    results = _images(list(images), shape)
    good = [i for i, r in enumerate(results) if not isinstance(r, str)]
    n = len(results)
    predicted, probabilities, names = [None] * n, [None] * n, [None] * n
    errors = [r if isinstance(r, str) else None for r in results]
    if good:
        p, c = predict(saved_model_dir, np.stack([results[i] for i in good]))
        for j, i in enumerate(good):
            predicted[i], probabilities[i], names[i] = int(c[j]), p[j].tolist(), class_names[int(c[j])]
    return pd.DataFrame({"predicted_class": predicted, "probabilities": probabilities,
                         "predicted_class_name": names, "error": errors})
