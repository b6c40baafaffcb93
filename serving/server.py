"""A local gRPC server speaking TF Serving's API over the SavedModels in a model base path.

    server = LocalServer(ModelManager(...), host="127.0.0.1", port=8500); server.start(); server.wait()

For development and tests where no `tensorflow_model_server` runs: `PredictionService` (Predict, Classify,
GetModelMetadata; Regress and MultiInference answer UNIMPLEMENTED), `ModelService.GetModelStatus`
(HandleReloadConfigRequest: UNIMPLEMENTED) and the standard health service (`grpc.health.v1`, SERVING
once a model has a version loaded). Status codes and messages follow TF Serving's: NOT_FOUND for an
unknown model or version, INVALID_ARGUMENT for a wrong input name, dtype or shape (checked against the
signature before the model runs) and for an unknown label, FAILED_PRECONDITION for an unknown signature.
Versions, labels and roll-outs are `serving.model_manager`'s. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, get_model_status_pb2, predict_pb2
from tensorflow_serving.apis import model_service_pb2_grpc as model_service
from tensorflow_serving.apis import prediction_service_pb2_grpc as prediction_service

from serving import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_MESSAGE_BYTES
from serving.errors import MESSAGE_LIMIT, RequestError, ServingError, echo
from serving.model_manager import ModelManager
from serving.servable import Servable
from serving.tensors import fill_tensor_proto

log = logging.getLogger(__name__)

_STATE = get_model_status_pb2.ModelVersionStatus.State


def _resolve(manager: ModelManager, spec) -> Servable:
    choice = spec.WhichOneof("version_choice")
    return manager.resolve(
        spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
    )


def _answer_spec(response_spec, request_spec, servable: Servable, signature_name: str) -> None:
    response_spec.name = servable.name
    response_spec.version.value = servable.version
    response_spec.signature_name = signature_name


@contextlib.contextmanager
def _errors_as_status(context):
    """A RequestError answers with its status code; anything else (a bug, an unforeseen input) with INTERNAL,
    logged. Either way the call ends there and the server keeps serving."""
    try:
        yield
    except RequestError as exc:
        # The client's mistake, answered: no traceback, and not at ERROR (a client could fill the log).
        log.debug("request refused with %s: %s", exc.code.name, echo(exc.message, MESSAGE_LIMIT))
        context.abort(exc.code, echo(exc.message, MESSAGE_LIMIT))
    except Exception as exc:
        log.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, echo(f"{type(exc).__name__}: {exc}", MESSAGE_LIMIT))


class _PredictionService(prediction_service.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        self._manager = manager
        self._max_batch_size = max_batch_size

    def _run(self, request, context, method: str, response):
        """Resolve the model the request names, run `method` of its servable, and name the answering version."""
        with _errors_as_status(context):
            servable = _resolve(self._manager, request.model_spec)
            answer = getattr(servable, method)(request, max_batch_size=self._max_batch_size)
        _answer_spec(response.model_spec, request.model_spec, servable,
                     request.model_spec.signature_name or "serving_default")
        return answer, response

    def Predict(self, request, context):
        outputs, response = self._run(request, context, "predict", predict_pb2.PredictResponse())
        for key, value in outputs.items():
            fill_tensor_proto(response.outputs[key], value)
        return response

    def Classify(self, request, context):
        result, response = self._run(request, context, "classify", classification_pb2.ClassificationResponse())
        response.result.CopyFrom(result)
        return response

    def GetModelMetadata(self, request, context):
        with _errors_as_status(context):
            if list(request.metadata_field) != ["signature_def"]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Metadata field(s) {echo(list(request.metadata_field))} not supported; "
                                   "ask for ['signature_def']")
            servable = _resolve(self._manager, request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response.metadata["signature_def"].Pack(signature_map)
        return response


class _ModelService(model_service.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self._manager = manager

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        with _errors_as_status(context):
            if spec.WhichOneof("version_choice") == "version_label":
                version = self._manager.resolve(spec.name, label=spec.version_label).version
            statuses = self._manager.statuses(spec.name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add(version=status.version, state=_STATE.Value(status.state))
            entry.status.error_code = status.error_code.value[0]
            entry.status.error_message = status.error_message
        return response


class LocalServer:
    """The gRPC server: the two TF Serving services and health over one `ModelManager`."""

    def __init__(self, manager: ModelManager, *, host: str = "127.0.0.1", port: int = 8500,
                 tls_cert: bytes | None = None, tls_key: bytes | None = None, client_ca: bytes | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_workers: int = 16,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, metrics=None):
        from serving.tls import check_server_credentials

        if max_message_bytes < 1 or max_batch_size < 1:
            raise ServingError(f"max_message_bytes and max_batch_size must be positive, got {max_message_bytes} "
                               f"and {max_batch_size}")
        if tls_cert is not None:
            check_server_credentials(tls_cert, tls_key, client_ca)  # before binding: gRPC says only "Failed to bind"
        self.manager = manager
        interceptors = []
        if metrics is not None:  # serving.metrics.ServingMetrics: TF Serving's request count and latency
            from serving.metrics import MetricsInterceptor

            interceptors.append(MetricsInterceptor(metrics))
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="serving"),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            interceptors=interceptors,
        )
        prediction_service.add_PredictionServiceServicer_to_server(
            _PredictionService(manager, max_batch_size), self._server)
        model_service.add_ModelServiceServicer_to_server(_ModelService(manager), self._server)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        address = f"{host}:{port}"
        try:
            if tls_cert is not None:
                credentials = grpc.ssl_server_credentials(
                    [(tls_key, tls_cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)
                self.port = self._server.add_secure_port(address, credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.50 raises "Failed to bind"; older versions returned port 0
            self.port = 0
        if self.port == 0:
            self._server.stop(None)
            raise ServingError(f"cannot listen on {address}: port {port} is in use or {host!r} is not an address "
                               "of this machine; choose another --port (0: any free port) or --host")
        self.host = host
        manager.on_change = self._update_health
        self._update_health()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _update_health(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        self._health.set("", serving if self.manager.any_available() else not_serving)
        for name in self.manager.model_names:
            try:
                self.manager.resolve(name)
                self._health.set(name, serving)
            except RequestError:
                self._health.set(name, not_serving)

    def start(self) -> None:
        """Load what is there, then open the port and start polling for new versions."""
        self.manager.poll()
        self._update_health()
        self._server.start()
        self.manager.start()
        log.info("serving %s on %s", ", ".join(self.manager.model_names), self.address)

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let running ones finish for up to `grace` seconds, then stop polling."""
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self.manager.stop()
        log.info("server on %s stopped", self.address)

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)
