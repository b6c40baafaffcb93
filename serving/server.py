"""A local gRPC server speaking TF Serving's API over the SavedModels in a model base path.

    server = LocalServer(ModelManager(...), host="127.0.0.1", port=8500); server.start(); server.wait()

For development and tests where no `tensorflow_model_server` runs: `PredictionService` (Predict, Classify,
GetModelMetadata; Regress and MultiInference answer UNIMPLEMENTED), `ModelService.GetModelStatus`
(HandleReloadConfigRequest: UNIMPLEMENTED) and the standard health service (`grpc.health.v1`, SERVING
once a model has a version loaded). Status codes and messages follow TF Serving's: NOT_FOUND for an
unknown model or version, INVALID_ARGUMENT for a wrong input name, dtype or shape (checked against the
signature before the model runs) and for an unknown label, FAILED_PRECONDITION for an unknown signature.
Versions, labels and roll-outs are `serving.model_manager`'s. Bound to 127.0.0.1 unless told otherwise.

The server is gRPC's asyncio server, on an event loop (uvloop's where installed) in a thread of its own: Predict
checks its request on the loop and awaits the model call (on the batching queue when batching is on, else on a
worker thread), so a call waiting for its batch holds no thread, and one event loop instead of a thread per call
does gRPC's own work. The other methods are plain functions that run on the worker threads (`max_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
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


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status a failed call answers: a RequestError's own code; anything else (a bug, an unforeseen input)
    INTERNAL, logged."""
    if isinstance(exc, RequestError):
        # The client's mistake, answered: no traceback, and not at ERROR (a client could fill the log).
        log.debug("request refused with %s: %s", exc.code.name, echo(exc.message, MESSAGE_LIMIT))
        return exc.code, echo(exc.message, MESSAGE_LIMIT)
    log.error("request failed", exc_info=exc)
    return grpc.StatusCode.INTERNAL, echo(f"{type(exc).__name__}: {exc}", MESSAGE_LIMIT)


@contextlib.contextmanager
def _errors_as_status(context):
    """In a plain (thread) handler: the call ends with `_status_of` the error, and the server keeps serving."""
    try:
        yield
    except Exception as exc:
        context.abort(*_status_of(exc))


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv; its loop machinery in C) where it is installed, else asyncio's: gRPC's asyncio
    server runs on either, and on uvloop's it answered 4-8% more requests/s under load (2026-12-05, in the history of
    bench/README.md)."""
    try:
        import uvloop
    except ImportError:  # not on this platform (Windows): asyncio's own loop
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Completions:
    """Model calls finished on other threads, handed to the event loop with one wake-up for all that finish
    together: a batch of 16 answers wakes the loop once, where `asyncio.wrap_future` would wake it 16 times."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._done: deque = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def wait(self, future: futures.Future) -> asyncio.Future:
        """An asyncio future with `future`'s outcome; cancelling it cancels `future` if that has not started."""
        waiter = self._loop.create_future()
        waiter.add_done_callback(lambda w: future.cancel() if w.cancelled() else None)
        future.add_done_callback(lambda f: self._finished(waiter, f))
        return waiter

    def _finished(self, waiter: asyncio.Future, future: futures.Future) -> None:  # on the thread that finished it
        self._done.append((waiter, future))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # on the loop
        with self._lock:
            self._scheduled = False  # before draining: what finishes from now on schedules its own delivery
        while self._done:
            waiter, future = self._done.popleft()
            if waiter.done() or future.cancelled():
                continue
            error = future.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(future.result())


class _PredictionService(prediction_service.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 executor: futures.Executor | None = None, completions: _Completions | None = None):
        """`executor` and `completions` are Predict's (the gRPC server's); REST's metadata route needs neither."""
        self._manager = manager
        self._max_batch_size = max_batch_size
        self._executor = executor  # where Predict's model calls run when batching is off
        self._completions = completions  # finished model calls back to the server's loop

    def _run(self, request, context, method: str, response):
        """Resolve the model the request names, run `method` of its servable, and name the answering version."""
        with _errors_as_status(context):
            servable = _resolve(self._manager, request.model_spec)
            answer = getattr(servable, method)(request, max_batch_size=self._max_batch_size)
        _answer_spec(response.model_spec, request.model_spec, servable,
                     request.model_spec.signature_name or "serving_default")
        return answer, response

    async def Predict(self, request, context):
        """On the event loop: resolve and check (microseconds), then await the model call, which runs elsewhere."""
        failure = None
        try:
            servable = _resolve(self._manager, request.model_spec)
            signature, arrays = servable.checked_inputs(request, max_batch_size=self._max_batch_size)
            # A call the client gives up on cancels its model call if that has not started (serving.batching drops
            # it from its batch); one that has started finishes, unread.
            outputs = await self._completions.wait(servable.submit(signature, arrays, self._executor))
            outputs = servable.filter_outputs(outputs, request.output_filter)
        except Exception as exc:  # noqa: BLE001 - every failure is answered with a status, as _errors_as_status does
            failure = _status_of(exc)
        if failure is not None:
            await context.abort(*failure)
        response = predict_pb2.PredictResponse()
        _answer_spec(response.model_spec, request.model_spec, servable,
                     request.model_spec.signature_name or "serving_default")
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


def prediction_servicer(manager: ModelManager, max_batch_size: int, executor: futures.Executor, metrics=None):
    """The PredictionService servicer as the gRPC server registers it; called on the server's running event loop
    (Predict's finished model calls come back to it). With `metrics` (serving.metrics.ServingMetrics), each method
    is counted and timed as TF Serving's request metrics do."""
    predictions = _PredictionService(manager, max_batch_size, executor, _Completions(asyncio.get_running_loop()))
    if metrics is not None:
        from serving.metrics import timed_servicer

        predictions = timed_servicer(predictions, metrics)
    return predictions


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
        self.host = host
        self._executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="serving")
        self._health = health.HealthServicer()
        self._stopped = threading.Event()
        self._loop = _new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-server", daemon=True)
        self._thread.start()
        credentials = None
        if tls_cert is not None:
            credentials = grpc.ssl_server_credentials(
                [(tls_key, tls_cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)
        try:
            # Built on its loop: an asyncio server belongs to the loop it is made on.
            self._server, self.port = self._on_loop(self._build(
                f"{host}:{port}", credentials, max_message_bytes, max_batch_size, metrics))
        except BaseException:
            self._close_loop()
            raise
        if self.port == 0:
            self._on_loop(self._server.stop(None))
            self._close_loop()
            raise ServingError(f"cannot listen on {host}:{port}: port {port} is in use or {host!r} is not an address "
                               "of this machine; choose another --port (0: any free port) or --host")
        manager.on_change = self._update_health
        self._update_health()

    async def _build(self, address: str, credentials, max_message_bytes: int, max_batch_size: int, metrics):
        server = grpc.aio.server(
            migration_thread_pool=self._executor,  # the plain (thread) handlers: metadata, status, health, Classify
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        predictions = prediction_servicer(self.manager, max_batch_size, self._executor, metrics)
        prediction_service.add_PredictionServiceServicer_to_server(predictions, server)
        model_service.add_ModelServiceServicer_to_server(_ModelService(self.manager), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.50 raises "Failed to bind"; older versions returned port 0
            port = 0
        return server, port

    def _on_loop(self, coroutine):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

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
        self._on_loop(self._server.start())
        self.manager.start()
        log.info("serving %s on %s", ", ".join(self.manager.model_names), self.address)

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let running ones finish for up to `grace` seconds, then stop polling."""
        if self._stopped.is_set():
            return
        self._health.enter_graceful_shutdown()
        self._on_loop(self._server.stop(grace))
        self._close_loop()
        self.manager.stop()
        log.info("server on %s stopped", self.address)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops or `timeout` seconds pass; True if the timeout came first (as gRPC's
        wait_for_termination)."""
        return not self._stopped.wait(timeout)
