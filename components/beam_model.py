"""Beam RunInference `ModelHandler`s for the exported model: a local SavedModel, or the same model served by
TF Serving (or `mnist-pipeline serve`) over its gRPC API.

    handler = KeyedModelHandler(SavedModelHandler(saved_model_dir, min_batch_size=64, max_batch_size=256))
    handler = KeyedModelHandler(ServingModelHandler(ServerRef("localhost:8500"), max_batch_size=256))
    keyed_predictions = keyed_images | RunInference(handler)
    batch_predictions = batches | RunInference(BatchHandler(SavedModelHandler(saved_model_dir)))

Both take uint8 images [h, w, c] of the model's shape ([28, 28, 1] for MNIST), scale them with the project's one
function, and give
PredictionResult(image, (probabilities float32 [10], class int, model version or None), model_id).

Beam's stock TF handlers import tensorflow_hub and load with Keras, which cannot read a Keras 3 SavedModel;
this one loads it with `tf.saved_model.load` (once per worker process: RunInference keeps the model in a
`shared.Shared` handle, so the DoFn instances of all threads use the same one) and calls its
`serving_default` signature on a numpy batch. Examples are uint8 images [h, w, c] (decoded, unscaled);
scaling happens per batch with `components.preprocessing.scale_images`, the function training and the
serving graph use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RemoteModelHandler

from serving import signatures as sig

log = logging.getLogger(__name__)


class BatchPredictor:
    """A loaded SavedModel as one TF graph call per batch: uint8 [n, h, w, c] -> (probabilities float32
    [n, 10], classes int64 [n]); the project's one scaling function and the signature run in the same graph
    (no eager op per batch). Used by both scoring engines (Beam's handler here, Spark's `spark_worker`)."""

    def __init__(self, saved_model_dir: str, signature: str = sig.SERVING_DEFAULT):
        import tensorflow as tf

        from components.preprocessing import scale_images

        # The loaded object owns the variables the signature functions use: keep it, not just the function.
        self.model = tf.saved_model.load(saved_model_dir)
        fn = self.model.signatures[signature]

        # Any image shape here: the signature itself takes only the model's (28x28x1, 32x32x3). No AutoGraph:
        # no Python control flow to convert, and converting costs ~0.05 s of every job's start-up.
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)], autograph=False)
        def predict(images):
            outputs = fn(**{sig.IMAGE_INPUT: scale_images(images)})
            return outputs[sig.PROBABILITIES_OUTPUT], tf.cast(outputs[sig.CLASSES_OUTPUT], tf.int64)

        self._predict = predict

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, classes = self._predict(np.asarray(images, np.uint8))
        return probabilities.numpy(), classes.numpy()


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """uint8 [h, w, c] images -> PredictionResult(image, (probabilities float32 [10], class int), model_id)
    (no version in the tuple: the job knows the SavedModel's)."""

    def __init__(
        self,
        saved_model_dir: str,
        *,
        min_batch_size: int = 1,
        max_batch_size: int = 256,
        signature: str = sig.SERVING_DEFAULT,
        model_id: str | None = None,
    ):
        super().__init__()
        self._saved_model_dir = str(saved_model_dir)
        self._signature = signature
        self._min_batch_size = int(min_batch_size)
        self._max_batch_size = int(max_batch_size)
        self._model_id = model_id or self._saved_model_dir

    def load_model(self) -> Any:
        log.info("loading SavedModel %s", self._saved_model_dir)
        return BatchPredictor(self._saved_model_dir, self._signature)

    def predict_batch(self, images: np.ndarray, model: Any) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [n, h, w, c] -> (probabilities float32 [n, 10], classes int64 [n]) in one call."""
        return model(images)

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        probabilities, classes = model(np.stack(batch))
        classes = classes.tolist()
        model_id = self._model_id
        return [
            PredictionResult(image, (p, c), model_id) for image, p, c in zip(batch, probabilities, classes)
        ]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(int(x.nbytes) for x in batch)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self._min_batch_size, "max_batch_size": self._max_batch_size}

    def get_metrics_namespace(self) -> str:
        return "RunInference"


class RemoteInferenceError(Exception):
    """A batch the served model did not answer; `code` is the gRPC status code's name (e.g. "UNAVAILABLE").

    Its own class because Beam pickles failed batches with their exception between steps, and
    `ServingError` does not keep its code through pickling (only `args` survive)."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message, code)
        self.code = code

    def __str__(self) -> str:
        return self.args[0]

    def __repr__(self) -> str:  # what Beam's exception handling keeps of it: "<CODE>: <message>"
        return f"{self.code}: {self.args[0]}"


def _retry_unavailable(exc: Exception) -> bool:
    """Beam retries (with exponential backoff) a batch the server could not take: UNAVAILABLE only; any other
    status (a bad request, a missing version, a deadline exceeded) fails the batch at once."""
    return getattr(exc, "code", None) == "UNAVAILABLE"


def connect_to(server, *, timeout: float | None = None, max_batch_size: int = 256) -> Any:
    """A client for `server` (a `ServerRef`): gRPC for HOST:PORT, TF Serving's REST API for an http(s):// URL,
    with the same calls. Its own retries are off (max_attempts=1): Beam's RemoteModelHandler alone retries,
    with its backoff, and counts the attempts."""
    from serving.client import connect

    return connect(server.address, model_name=server.model_name, timeout=timeout or server.timeout,
                   root_certificates=server.root_certificates, certificate_chain=server.certificate_chain,
                   private_key=server.private_key, max_batch_size=max_batch_size, max_attempts=1)


class ServingModelHandler(RemoteModelHandler[np.ndarray, PredictionResult, Any]):
    """uint8 [h, w, c] images -> the served model's Predict (serving_default) through `serving.client`.

    Beam's RemoteModelHandler wraps each batch's request: client-side throttling (ReactiveThrottler), and
    `server.retries` retries with exponential backoff (5 s, 10 s, ... with jitter) when the answer is
    UNAVAILABLE; gRPC's own retries are off so that the count is Beam's. Every request has the deadline
    `server.timeout`; the model name, version or version label and TLS files come from `server`. Each row
    carries the version that answered; a batch that still fails raises a ServingError with its status code,
    which the job's `with_exception_handling` turns into failed rows."""

    def __init__(self, server, *, min_batch_size: int = 1, max_batch_size: int = 256):
        super().__init__(namespace="ServingModelHandler", num_retries=server.retries,
                         retry_filter=_retry_unavailable, throttle_delay_secs=server.throttle_delay_s)
        self._server = server
        self._min_batch_size = int(min_batch_size)
        self._max_batch_size = int(max_batch_size)

    def create_client(self) -> Any:
        log.info("scoring through %s (model %s)", self._server.address, self._server.model_name)
        return connect_to(self._server, max_batch_size=max(self._max_batch_size, 1))

    def request(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        from components.preprocessing import scale_images
        from serving.errors import ServingError

        s = self._server
        try:
            answer = model.predict(scale_images(np.stack(batch)).numpy(), version=s.version,
                                   version_label=s.version_label)
        except ServingError as exc:
            code = getattr(exc.code, "name", None)
            raise RemoteInferenceError(str(exc), code) from None
        probabilities = answer[sig.PROBABILITIES_OUTPUT]
        classes = answer[sig.CLASSES_OUTPUT].astype(np.int64).tolist()
        version = answer.model_version
        model_id = f"{s.model_name}/{version}"
        return [PredictionResult(image, (p, c, version), model_id)
                for image, p, c in zip(batch, probabilities, classes)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(int(x.nbytes) for x in batch)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self._min_batch_size, "max_batch_size": self._max_batch_size}


class BatchHandler(ModelHandler[Any, PredictionResult, Any]):
    """Pre-batched elements (metas, uint8 images [n, h, w, c]) -> PredictionResult((metas, images),
    (probabilities float32 [n, 10], classes int64 [n], model version or None), model_id), over any
    per-image handler (`inner`: its model loading, sharing, retries and throttling all apply).

    The scoring job batches rows where it reads them; RunInference then sees one element per batch
    (its BatchElements is set to batches of one element), so Beam's per-element cost is paid per batch.
    RunInference's `num_inferences` counts batches here; the job's own metrics count rows."""

    def __init__(self, inner: ModelHandler):
        super().__init__()
        self._inner = inner

    def load_model(self) -> Any:
        return self._inner.load_model()

    def run_inference(self, batch: Sequence[Any], model: Any, inference_args: dict[str, Any] | None = None
                      ) -> Iterable[PredictionResult]:
        out = []
        fast = getattr(self._inner, "predict_batch", None)
        for metas, images in batch:
            if fast is not None:  # the whole batch in one call, no PredictionResult per image
                probabilities, classes = fast(images, model)
                out.append(PredictionResult((metas, images), (probabilities, classes, None), None))
                continue
            results = list(self._inner.run_inference(images, model, inference_args))
            probabilities = np.stack([r.inference[0] for r in results])
            classes = np.array([r.inference[1] for r in results], np.int64)
            first = results[0].inference if results else ()
            version = first[2] if len(first) > 2 else None
            out.append(PredictionResult((metas, images), (probabilities, classes, version),
                                        results[0].model_id if results else None))
        return out

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(int(images.nbytes) for _, images in batch)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": 1}

    def get_metrics_namespace(self) -> str:
        return self._inner.get_metrics_namespace()

    def share_model_across_processes(self) -> bool:
        return self._inner.share_model_across_processes()

    def model_copies(self) -> int:
        return self._inner.model_copies()
