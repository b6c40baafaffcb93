"""A gRPC client for TF Serving's API (the real model server or `mnist-pipeline serve`): numpy in, numpy out.

Typical usage: `ServingClient("localhost:8500").predict(images)["classes"]` with images float32 [b, 28, 28, 1];
`connect("http://localhost:8501")` gives the REST client (`serving.rest_client.RestClient`) with the same calls.

    with ServingClient("localhost:8500", timeout=5.0) as client:
        client.wait_until_available(timeout=60)
        out = client.predict(images, version_label="stable")  # {"probabilities": [b, 10], "classes": [b]}
        out.model_version                                     # the version that answered

Tensors are converted by `serving.tensors` (tf.make_tensor_proto's wire form, built directly for numeric
arrays). Every call has a deadline (`timeout`). The channel raises gRPC's message size limits to `max_message_bytes`,
and a batch is split so that no request exceeds that limit nor `max_batch_size` images (TF Serving's batching
refuses batches larger than its max_batch_size). UNAVAILABLE is retried by gRPC itself, through the
channel's service config (`retryPolicy`, `max_attempts` in all; 1 turns retries off), not by a loop here. TLS is
used when `root_certificates` is given, mutual TLS when `certificate_chain` and `private_key` are given too. Every
`grpc.RpcError` becomes a `ServingError` that keeps the status code and says what to do.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import DEFAULT_MAX_MESSAGE_BYTES
from serving import signatures as sig
from serving.answers import (
    HINTS,
    ModelMetadata,
    Prediction,
    VersionStatus,
    as_inputs,
    batch_slices,
    check_client_options,
    joined,
)
from serving.errors import ServingError
from serving.tensors import fill_tensor_proto, to_ndarray
from serving.tls import read_pem_file

log = logging.getLogger(__name__)

_ENVELOPE_BYTES = 64 * 1024  # room for the request's names and shapes beside the tensor bytes

_HINTS = HINTS  # the name this module has always used


def service_config(max_attempts: int = 5) -> str:
    """gRPC service config: every TF Serving method retried on UNAVAILABLE with exponential backoff."""
    return json.dumps({
        "methodConfig": [{
            "name": [{"service": "tensorflow.serving.PredictionService"},
                     {"service": "tensorflow.serving.ModelService"}],
            "retryPolicy": {
                "maxAttempts": max_attempts,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
    })


class ServingClient:
    """PredictionService and ModelService calls for one model over one channel; thread-safe."""

    def __init__(
        self,
        address: str,
        *,
        model_name: str = sig.MODEL_NAME,
        timeout: float = 10.0,
        root_certificates: str | os.PathLike | None = None,
        certificate_chain: str | os.PathLike | None = None,
        private_key: str | os.PathLike | None = None,
        tls_server_name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_size: int = 256,
        max_attempts: int = 5,
    ):
        check_client_options(timeout, certificate_chain, private_key)
        self.address = address
        self.model_name = model_name
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.max_batch_size = max_batch_size
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if max_attempts >= 2:  # gRPC's retryPolicy needs at least 2 attempts; 1 means no retries
            options += [("grpc.enable_retries", 1), ("grpc.service_config", service_config(max_attempts))]
        if root_certificates is not None or certificate_chain is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read_pem_file(root_certificates, "CA certificate file"),
                private_key=read_pem_file(private_key, "client private key file"),
                certificate_chain=read_pem_file(certificate_chain, "client certificate file"),
            )
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers ----------------------------------------------------------------------------------------

    def _spec(self, spec, version: int | None, version_label: str | None, signature_name: str | None) -> None:
        if version is not None and version_label is not None:
            raise ServingError(f"name a version ({version}) or a version label ({version_label!r}), not both")
        spec.name = self.model_name
        if signature_name is not None:
            spec.signature_name = signature_name
        if version is not None:
            spec.version.value = int(version)
        elif version_label is not None:
            spec.version_label = version_label

    def _call(self, method, request, what: str, **kwargs):
        try:
            return method(request, timeout=self.timeout, **kwargs)
        except grpc.RpcError as exc:
            raise self._error(exc, what) from None

    def _error(self, exc: grpc.RpcError, what: str) -> ServingError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        hint = _HINTS.get(code, "see the server's log").format(address=self.address, timeout=self.timeout)
        return ServingError(f"{what} of model {self.model_name!r} at {self.address} failed with {code.name}: "
                            f"{details}; {hint}", code)

    def _chunks(self, inputs: Mapping[str, np.ndarray]) -> list[slice]:
        return batch_slices(inputs, max_message_bytes=self.max_message_bytes, max_batch_size=self.max_batch_size,
                            envelope=_ENVELOPE_BYTES, nbytes=_nbytes)

    # -- PredictionService ------------------------------------------------------------------------------

    def predict(
        self,
        inputs: np.ndarray | Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = sig.SERVING_DEFAULT,
        input_name: str = sig.IMAGE_INPUT,
    ) -> Prediction:
        """Predict on a batch; an array goes to `input_name`. Large batches go as several requests."""
        arrays = as_inputs(inputs, input_name)
        parts: list[Mapping[str, np.ndarray]] = []
        model_version = None
        for part in self._chunks(arrays):
            request = predict_pb2.PredictRequest()
            self._spec(request.model_spec, version, version_label, signature_name)
            for key, array in arrays.items():
                fill_tensor_proto(request.inputs[key], array[part])
            response = self._call(self._predictions.Predict, request, f"Predict ({signature_name})")
            # Copied: the fast path views the response's bytes read-only, and callers may write to outputs.
            parts.append({k: np.array(to_ndarray(v)) for k, v in response.outputs.items()})
            model_version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return Prediction(joined(parts), model_version)

    def predict_png(self, pngs: Sequence[bytes], **kwargs) -> Prediction:
        """Predict on encoded PNG files (bytes); the model decodes and scales them."""
        array = np.array(list(pngs), dtype=object)
        return self.predict(array, signature_name=sig.PNG_SIGNATURE, input_name=sig.PNG_INPUT, **kwargs)

    def classify(
        self,
        examples: Iterable[example_pb2.Example | bytes],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = sig.CLASSIFY_SIGNATURE,
    ) -> Prediction:
        """Classify tf.Examples (or their serialized bytes): {"classes": str [b, k], "scores": float32 [b, k]},
        with the version that answered. The classes are the model's class names in index order ("0".."9" for
        MNIST, "T-shirt/top".."Ankle boot" for Fashion-MNIST), so scores[i].argmax() indexes both."""
        parsed = [e if isinstance(e, example_pb2.Example) else example_pb2.Example.FromString(e) for e in examples]
        classes, scores = [], []
        model_version = None
        step = self.max_batch_size
        for start in range(0, max(len(parsed), 1), step):
            request = classification_pb2.ClassificationRequest()
            self._spec(request.model_spec, version, version_label, signature_name)
            request.input.example_list.examples.extend(parsed[start:start + step])
            response = self._call(self._predictions.Classify, request, f"Classify ({signature_name})")
            if response.model_spec.HasField("version"):
                model_version = response.model_spec.version.value
            for row in response.result.classifications:
                classes.append([c.label for c in row.classes])
                scores.append([c.score for c in row.classes])
        return Prediction({
            sig.CLASSIFY_CLASSES_OUTPUT: np.array(classes, dtype=str),
            sig.CLASSIFY_SCORES_OUTPUT: np.array(scores, dtype=np.float32),
        }, model_version)

    def get_model_metadata(self, *, version: int | None = None, version_label: str | None = None) -> ModelMetadata:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version, version_label, None)
        response = self._call(self._predictions.GetModelMetadata, request, "GetModelMetadata")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return ModelMetadata(response.model_spec.version.value, dict(signature_map.signature_def))

    # -- ModelService -----------------------------------------------------------------------------------

    def get_model_status(self, *, version: int | None = None, version_label: str | None = None,
                         wait_for_ready: bool = False) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version, version_label, None)
        response = self._call(self._models.GetModelStatus, request, "GetModelStatus", wait_for_ready=wait_for_ready)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [
            VersionStatus(s.version, states.Name(s.state), s.status.error_code, s.status.error_message)
            for s in response.model_version_status
        ]

    def wait_until_available(self, timeout: float = 60.0) -> list[VersionStatus]:
        """Block until the model has an AVAILABLE version (GetModelStatus, waiting for the channel to be ready)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = self.model_name
            try:
                response = self._models.GetModelStatus(request, timeout=remaining, wait_for_ready=True)
                statuses = [s for s in response.model_version_status
                            if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE]
                if statuses:
                    return self.get_model_status()
                last = None
            except grpc.RpcError as exc:
                # NOT_FOUND: the server is up but the model has no version yet; anything else is final.
                if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise self._error(exc, "GetModelStatus") from None
                last = exc
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
        why = f" (last answer: {last.code().name}: {last.details()})" if isinstance(last, grpc.RpcError) else ""
        raise ServingError(
            f"model {self.model_name!r} at {self.address} has no available version after {timeout:g} s{why}; "
            "check the server is running and its model base path holds a version", grpc.StatusCode.DEADLINE_EXCEEDED)


def connect(address: str, **kwargs):
    """A client for `address`: `RestClient` for an http:// or https:// URL, else the gRPC `ServingClient`;
    both take the same keyword arguments and answer the same calls."""
    if address.startswith(("http://", "https://")):
        from serving.rest_client import RestClient

        return RestClient(address, **kwargs)
    return ServingClient(address, **kwargs)


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return sum(len(x) + 8 for x in array.ravel())
    return array.nbytes
