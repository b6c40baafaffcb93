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
from collections.abc import Mapping

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.answers import ModelMetadata, VersionStatus
from serving.client_core import ClientCore, RetryPolicy
from serving.tensors import fill_tensor_proto, to_ndarray
from serving.tls import read_pem_file

log = logging.getLogger(__name__)

_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def service_config(max_attempts: int = 5) -> str:
    """gRPC service config: every TF Serving method retried on UNAVAILABLE with exponential backoff."""
    return json.dumps({"methodConfig": [RetryPolicy(max_attempts=max_attempts).grpc_method_config(_SERVICES)]})


class ServingClient(ClientCore):
    """PredictionService and ModelService calls for one model over one gRPC channel; thread-safe."""

    def _connect(self, root_certificates, certificate_chain, private_key, tls_server_name: str | None) -> None:
        address, max_message_bytes = self.address, self.max_message_bytes
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if self.retry.max_attempts >= 2:  # gRPC's retryPolicy needs at least 2 attempts; 1 means no retries
            options += [("grpc.enable_retries", 1), ("grpc.service_config", service_config(self.retry.max_attempts))]
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

    # -- the gRPC transport -----------------------------------------------------------------------------

    def _spec(self, spec, version: int | None, version_label: str | None, signature_name: str | None) -> None:
        spec.name = self.model_name
        if signature_name is not None:
            spec.signature_name = signature_name
        if version is not None:
            spec.version.value = int(version)
        elif version_label is not None:
            spec.version_label = version_label

    def _call(self, method, request, what: str, timeout: float | None = None, **kwargs):
        try:
            return method(request, timeout=timeout or self.timeout, **kwargs)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise self._failure(what, code, details) from None

    @staticmethod
    def _answered(response) -> int | None:
        return response.model_spec.version.value if response.model_spec.HasField("version") else None

    def _predict_once(self, arrays: Mapping[str, np.ndarray], version, version_label, signature_name: str):
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, version_label, signature_name)
        for key, array in arrays.items():
            fill_tensor_proto(request.inputs[key], array)
        response = self._call(self._predictions.Predict, request, f"Predict ({signature_name})")
        # Copied: the fast path views the response's bytes read-only, and callers may write to outputs.
        return {k: np.array(to_ndarray(v)) for k, v in response.outputs.items()}, self._answered(response)

    def _classify_once(self, examples: list, version, version_label, signature_name: str):
        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, version, version_label, signature_name)
        request.input.example_list.examples.extend(examples)
        response = self._call(self._predictions.Classify, request, f"Classify ({signature_name})")
        rows = response.result.classifications
        return ([[c.label for c in row.classes] for row in rows], [[c.score for c in row.classes] for row in rows],
                self._answered(response))

    def _metadata_once(self, version, version_label) -> ModelMetadata:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version, version_label, None)
        response = self._call(self._predictions.GetModelMetadata, request, "GetModelMetadata")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return ModelMetadata(response.model_spec.version.value, dict(signature_map.signature_def))

    def _status_once(self, version, version_label, *, timeout: float, wait_for_ready: bool) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version, version_label, None)
        response = self._call(self._models.GetModelStatus, request, "GetModelStatus", timeout,
                              wait_for_ready=wait_for_ready)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [VersionStatus(s.version, states.Name(s.state), s.status.error_code, s.status.error_message)
                for s in response.model_version_status]


def connect(address: str, **kwargs):
    """A client for `address`: `RestClient` for an http:// or https:// URL, else the gRPC `ServingClient`;
    both take the same keyword arguments and answer the same calls."""
    if address.startswith(("http://", "https://")):
        from serving.rest_client import RestClient

        return RestClient(address, **kwargs)
    return ServingClient(address, **kwargs)
