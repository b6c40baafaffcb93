"""A Beam RunInference `ModelHandler` for the exported SavedModel (Keras 3 inside, TF2 SavedModel outside).

    handler = KeyedModelHandler(SavedModelHandler(saved_model_dir, min_batch_size=64, max_batch_size=256))
    keyed_predictions = keyed_images | RunInference(handler)

Beam's stock TF handlers import tensorflow_hub and load with Keras, which cannot read a Keras 3 SavedModel;
this one loads it with `tf.saved_model.load` (once per worker process: RunInference keeps the model in a
`shared.Shared` handle, so the DoFn instances of all threads use the same one) and calls its
`serving_default` signature on a numpy batch. Examples are uint8 images [28, 28, 1] (decoded, unscaled);
scaling happens per batch with `components.preprocessing.scale_images`, the function training and the
serving graph use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from serving import signatures as sig

log = logging.getLogger(__name__)


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """uint8 [28, 28, 1] images -> PredictionResult(image, (probabilities float32 [10], class int), model_id)."""

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
        import tensorflow as tf

        log.info("loading SavedModel %s", self._saved_model_dir)
        # The loaded object owns the variables the signature functions use: keep it, not just the function.
        return tf.saved_model.load(self._saved_model_dir)

    def run_inference(
        self, batch: Sequence[np.ndarray], model: Any, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        from components.preprocessing import scale_images

        outputs = model.signatures[self._signature](**{sig.IMAGE_INPUT: scale_images(np.stack(batch))})
        probabilities = outputs[sig.PROBABILITIES_OUTPUT].numpy()
        classes = outputs[sig.CLASSES_OUTPUT].numpy().tolist()
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
