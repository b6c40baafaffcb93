"""TF Serving's REST API (tensorflow_serving/g3doc/api/api_rest.md) for the local server, over the same
`ModelManager` and `Servable` as the gRPC services, so both protocols share one path for checks and calls.

    rest = RestServer(manager, host="127.0.0.1", port=8501); rest.start(); ...; rest.stop()

    POST /v1/models/{name}[/versions/{n}|/labels/{label}]:predict   {"instances": [...]} or {"inputs": ...}
    POST /v1/models/{name}[/versions/{n}|/labels/{label}]:classify  {"examples": [...], "context": {...}}
    GET  /v1/models/{name}[/versions/{n}|/labels/{label}]           GetModelStatus as JSON
    GET  /v1/models/{name}[/versions/{n}|/labels/{label}]/metadata  GetModelMetadata as JSON
    GET  <monitoring path>                                          Prometheus text (with a monitoring config)

Row format ("instances") answers {"predictions": [...]}, columnar ("inputs") answers {"outputs": ...}; binary
values travel as {"b64": "..."}. Errors answer {"error": "..."} with the HTTP status TF Serving maps the gRPC
code to (http_server.cc: INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND 404, UNIMPLEMENTED 501,
UNAVAILABLE 503, ...); a path under /v1/ that names no API is "Malformed request" (400), any other path 404.
HTTP/1.1 with keep-alive; TLS (and client certificates) as for gRPC; a body over `max_body_bytes` is refused
before it is read (413). The JSON is `serving.rest_codec`'s (shared with the REST client), the routing
`serving.rest_routes`'s; this module owns the server's sockets, threads and TLS.
"""

from __future__ import annotations

import logging
import os
import queue
import ssl
import tempfile
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from serving import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_MESSAGE_BYTES
from serving.errors import ServingError
from serving.model_manager import ModelManager
from serving.rest_routes import Handler

log = logging.getLogger(__name__)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True  # SO_REUSEADDR: a restart binds past TIME_WAIT; a port with a listener is still refused

    manager: ModelManager
    max_body_bytes: int
    max_batch_size: int
    metrics: Any
    metrics_path: str | None
    stopping: bool
    prediction_service: Any
    model_service: Any
    ssl_context: ssl.SSLContext | None = None

    def get_request(self):
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # The handshake happens in the connection's own thread (on its first read), never in the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        log.debug("REST connection from %s ended with an error", client_address, exc_info=True)

    def process_request(self, request, client_address):
        """Each connection in a thread of its own, as ThreadingHTTPServer does, but a thread whose connection
        ended waits a while for the next one: starting a thread in a process busy with TensorFlow and gRPC
        threads costs far more than the stdlib's own figure (its start waits for the new thread to get the
        GIL), and a client that opens a connection per request (curl, requests) paid it on every request."""
        self._connection_threads.submit(self._serve_connection, request, client_address)

    def _serve_connection(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class _ThreadReuse:
    """Runs each job in an idle thread if one waits (for up to `idle_seconds`), else in a new one: unbounded like
    a thread per job, without a thread start per job."""

    def __init__(self, name: str, idle_seconds: float = 60.0):
        self._name = name
        self._idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn, *args) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put((fn, args))
                return
        threading.Thread(target=self._run, args=(fn, args), name=self._name, daemon=True).start()

    def _run(self, fn, args) -> None:
        while True:
            fn(*args)
            with self._lock:
                self._idle += 1
            try:
                fn, args = self._jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:  # a job put meanwhile was counted against this thread's idleness: take it
                    if self._jobs.empty():
                        self._idle -= 1
                        return
                fn, args = self._jobs.get()


def _server_ssl_context(tls_cert: bytes, tls_key: bytes, client_ca: bytes | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="rest-tls-") as tmp:  # load_cert_chain reads files only
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert, "wb") as fh:
            fh.write(tls_cert)
        with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as fh:
            fh.write(tls_key)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ServingError(f"the TLS certificate and key cannot be used for REST: {exc}; pass a matching PEM "
                               f"certificate and private key") from exc
    if client_ca is not None:
        context.load_verify_locations(cadata=client_ca.decode())
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class RestServer:
    """TF Serving's REST API (and the Prometheus metrics path) over one `ModelManager`."""

    def __init__(self, manager: ModelManager, *, host: str = "127.0.0.1", port: int = 8501,
                 tls_cert: bytes | None = None, tls_key: bytes | None = None, client_ca: bytes | None = None,
                 max_body_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 metrics=None, metrics_path: str | None = None):
        from serving.server import _ModelService, _PredictionService

        try:
            self._http = _HTTPServer((host, port), Handler)
        except OSError as exc:
            raise ServingError(f"cannot bind the REST port {host}:{port}: {exc}; choose another --rest_api_port "
                               f"(0 turns REST off) or --host") from exc
        self._http._connection_threads = _ThreadReuse("rest-connection")
        self._http.manager = manager
        self._http.max_body_bytes = max_body_bytes
        self._http.max_batch_size = max_batch_size  # examples one request may carry, as on the gRPC port
        self._http.metrics = metrics
        self._http.metrics_path = metrics_path if metrics is not None else None
        self._http.stopping = False
        self._http.prediction_service = _PredictionService(manager)
        self._http.model_service = _ModelService(manager)
        if tls_cert is not None:
            self._http.ssl_context = _server_ssl_context(tls_cert, tls_key, client_ca)
        self.host = host
        self.port = self._http.server_address[1]
        self.tls = tls_cert is not None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-accept", daemon=True)
        self._thread.start()
        log.info("REST API on %s", self.url)

    def stop(self) -> None:
        """Refuse new requests (503 on open connections), stop accepting, close the port."""
        self._http.stopping = True
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

