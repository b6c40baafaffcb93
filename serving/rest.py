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
before it is read (413).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np

from serving import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_MESSAGE_BYTES
from serving.errors import MESSAGE_LIMIT, RequestError, ServingError, echo
from serving.http_status import HTTP_STATUS
from serving.model_manager import ModelManager

log = logging.getLogger(__name__)

# TF Serving's own route patterns (http_rest_api_handler.cc); they match the raw path, not a URL-decoded one.
_PREDICTION_API = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_MODEL_STATUS_API = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


class _AbortContext:
    """Stands in for a gRPC ServicerContext so REST status and metadata run the gRPC servicers' own code."""

    def abort(self, code, details):
        raise RequestError(code, details)


# -- JSON <-> numpy -----------------------------------------------------------------------------------------


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _b64decode(value: dict, where: str) -> bytes:
    text = value["b64"]
    if not isinstance(text, str):
        raise _invalid(f"{where}: the 'b64' value must be a string of base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"{where}: the 'b64' value is not valid base64: {exc}") from exc


def _shape_of(value: Any, where: str) -> list[int]:
    """The shape of nested lists; ragged lists are an error (TF Serving: each level must be the same length)."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    inner = _shape_of(value[0], where)
    for item in value[1:]:
        if _shape_of(item, where) != inner:
            raise _invalid(f"{where}: the lists are ragged (not all of one length at each level); send a "
                           f"rectangular tensor")
    return [len(value), *inner]


def _strings(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_strings(v, where) for v in value]
    if isinstance(value, str):
        return value.encode()
    if _is_b64(value):
        return _b64decode(value, where)
    raise _invalid(f"{where}: expected a string or {{\"b64\": ...}} for a DT_STRING input, got {type(value).__name__}")


def _to_numpy(value: Any, spec, where: str) -> np.ndarray:
    """A JSON value as a numpy array of the signature's dtype (the dtype comes from the signature, as in TF Serving)."""
    import tensorflow as tf

    if spec.dtype == tf.string:
        shape = _shape_of(value, where)
        flat = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        leaves = _strings(value, where)
        if shape:
            flat[:] = _flatten(leaves, len(shape))
        else:
            flat[0] = leaves
        return flat.reshape(shape)
    try:
        array = np.array(value)
    except ValueError as exc:
        raise _invalid(f"{where}: the lists are ragged (not all of one length at each level); send a rectangular "
                       f"tensor ({exc})") from exc
    want = spec.dtype.as_numpy_dtype
    kind = array.dtype.kind
    if spec.dtype.is_floating:
        ok = kind in "fiu"
    elif spec.dtype.is_integer:
        ok = kind in "iu"
    elif spec.dtype == tf.bool:
        ok = kind == "b"
    else:
        ok = False
    if array.size and not ok:
        raise _invalid(f"{where}: values of type {array.dtype.name if kind not in 'OUS' else 'string/object'} "
                       f"cannot be a {spec.dtype.name} tensor; send numbers")
    return array.astype(want, copy=False)


def _flatten(nested: list, depth: int) -> list:
    out = nested
    for _ in range(depth - 1):
        out = [x for sub in out for x in sub]
    return out


def _json_value(array: np.ndarray, name: str) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        as_b64 = name.endswith("_bytes")  # TF Serving's rule for binary outputs
        def conv(x):
            x = x if isinstance(x, bytes) else bytes(x)
            return {"b64": base64.b64encode(x).decode()} if as_b64 else x.decode("utf-8", "replace")
        return np.vectorize(conv, otypes=[object])(array).tolist() if array.ndim else conv(array.item())
    return array.tolist()


def parse_predict(body: Mapping[str, Any], signature) -> tuple[dict[str, np.ndarray], bool]:
    """The inputs of a predict body, by the signature, and whether it was the row ("instances") format."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise _invalid("Not both 'instances' and 'inputs' can be specified in the request; use one of them")
    if not has_instances and not has_inputs:
        raise _invalid("Missing 'inputs' or 'instances' key")
    specs = signature.inputs
    names = sorted(specs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid("Expecting 'instances' to be a list/array")
        if not instances:
            raise _invalid("'instances' is empty; send at least one instance")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if len(names) > 1 and not named:
            raise _invalid(f"the signature has several inputs {names}: each instance must be an object naming them")
        if named:
            for i, inst in enumerate(instances):
                if not isinstance(inst, dict) or _is_b64(inst) or set(inst) != set(names):
                    got = sorted(inst) if isinstance(inst, dict) else type(inst).__name__
                    raise _invalid(f"instance {i} has inputs {got}; every instance must name exactly {names}")
            arrays = {k: _to_numpy([inst[k] for inst in instances], specs[k], f"'instances' input {k!r}") for k in names}
        else:
            (key,) = names
            arrays = {key: _to_numpy(instances, specs[key], "'instances'")}
        return arrays, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if set(inputs) != set(names):
            raise _invalid(f"'inputs' names {sorted(inputs)}; the signature's inputs are {names}")
        return {k: _to_numpy(inputs[k], specs[k], f"'inputs' input {k!r}") for k in names}, False
    if len(names) > 1:
        raise _invalid(f"the signature has several inputs {names}: 'inputs' must be an object naming them")
    (key,) = names
    return {key: _to_numpy(inputs, specs[key], "'inputs'")}, False


def predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if not row_format:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"outputs": _json_value(value, name)}
        return {"outputs": {k: _json_value(v, k) for k, v in outputs.items()}}
    sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           "the outputs do not share a batch size, so they cannot be answered in the row format; "
                           "send the columnar format ('inputs')")
    columns = {k: _json_value(v, k) for k, v in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    (n,) = sizes
    return {"predictions": [{k: col[i] for k, col in columns.items()} for i in range(n)]}


def _feature(feature, value: Any, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) for v in values) or all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        feature.int64_list.value.extend(int(v) for v in values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    elif all(isinstance(v, str) or _is_b64(v) for v in values):
        feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else _b64decode(v, where) for v in values)
    else:
        raise _invalid(f"{where}: a feature's values must be all numbers, all strings or {{\"b64\": ...}}; got {value!r:.80}")


def _example(obj: Any, where: str):
    from tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise _invalid(f"{where} must be an object of feature name -> value(s), got {type(obj).__name__}")
    example = example_pb2.Example()
    for name, value in obj.items():
        _feature(example.features.feature[name], value, f"{where} feature {name!r}")
    return example


def parse_classify(body: Mapping[str, Any], model_spec) -> Any:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.CopyFrom(model_spec)
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise _invalid("Expecting 'examples' to be a list/array of objects")
    if "context" in body:
        target = request.input.example_list_with_context
        target.context.CopyFrom(_example(body["context"], "'context'"))
    else:
        target = request.input.example_list
    for i, obj in enumerate(examples):
        target.examples.add().CopyFrom(_example(obj, f"example {i}"))
    return request


def classify_response(result) -> dict[str, Any]:
    return {"result": [[[c.label, c.score] for c in row.classes] for row in result.classifications]}


# -- the HTTP server ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    server_version = "mnist-pipeline-serving"
    sys_version = ""  # the Server header names no Python version
    server: _HTTPServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)

    def setup(self):
        super().setup()
        # Answers go out in one write with Nagle off: headers and body in two segments would wait for the
        # client's delayed ACK (40 ms on Linux) on a kept-alive connection.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        if not hasattr(self, "_headers_buffer"):
            self._headers_buffer = []
        self._headers_buffer.append(b"\r\n")  # end_headers, with the body in the same buffer
        self._headers_buffer.append(payload)
        self.flush_headers()

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a bad request line, a URI or headers too long, an unknown method such as
        HEAD or TRACE) answer TF Serving's error JSON too, and end the connection."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer with a status line anyway
            self.request_version = "HTTP/1.0"
        text = message or HTTPStatus(code).phrase
        try:
            self._send(code, json.dumps({"error": f"{text}{': ' + explain if explain else ''}"}).encode())
        except OSError:
            pass

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode())

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise _HttpError(411, "chunked request bodies are not supported; send a Content-Length")
        length = self.headers.get("Content-Length")
        try:
            n = int(length) if length is not None else 0
        except ValueError:
            n = -1
        if n < 0:
            self.close_connection = True
            raise _HttpError(400, f"Content-Length {length!r} is not a byte count")
        if n > self.server.max_body_bytes:
            self.close_connection = True  # the body is never read: the connection cannot be reused
            raise _HttpError(413, f"the request body is {n} bytes, more than the server's limit of "
                                  f"{self.server.max_body_bytes}; send smaller batches")
        return self.rfile.read(n)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self):  # noqa: N802
        self._dispatch("PATCH")

    def do_OPTIONS(self):  # noqa: N802
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        server = self.server
        path = self.path.split("?", 1)[0]
        started = time.perf_counter()
        model, api = "", ""
        self._answered = ("", "")  # (version, signature) of a predict or classify, for the metrics
        code = grpc.StatusCode.OK
        try:
            if server.stopping:
                self.close_connection = True
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            if server.metrics_path and path == server.metrics_path:
                if method != "GET":
                    raise _HttpError(405, f"{method} {path}: the metrics path answers GET only")
                self._send(200, server.metrics.exposition(), server.metrics.content_type)
                return
            if not path.lower().startswith("/v1/"):
                raise _HttpError(404, f"Not found: {method} {path}; TF Serving's REST API is under /v1/models/")
            match = _PREDICTION_API.fullmatch(path)
            if method == "POST" and match:
                model, version, label, api = match.groups()
                self._send_json(200, self._call(model, version, label, api.lower()))
                return
            match = _MODEL_STATUS_API.fullmatch(path)
            if method == "GET" and match:
                model, version, label, sub = match.groups()
                api = "metadata" if sub else "status"
                if not model:
                    raise _invalid("Missing model name in request.")
                self._send_json(200, self._get(model, version, label, sub))
                return
            raise _invalid(f"Malformed request: {method} {path}")
        except _HttpError as exc:
            code = None
            self._error(exc.status, exc.message)
        except RequestError as exc:  # messages cut as on the gRPC port (serving.errors.MESSAGE_LIMIT)
            code = exc.code
            log.debug("REST request refused with %s: %s", exc.code.name, echo(exc.message, MESSAGE_LIMIT))
            self._error(HTTP_STATUS.get(exc.code, 500), echo(exc.message, MESSAGE_LIMIT))
        except Exception as exc:  # a bug or an unforeseen input: INTERNAL, logged, and the server keeps serving
            log.exception("REST %s %s failed", echo(method), echo(path))
            code = grpc.StatusCode.INTERNAL
            self._error(500, echo(f"{type(exc).__name__}: {exc}", MESSAGE_LIMIT))
        finally:
            if server.metrics is not None and model and api and api != "status":  # as gRPC: ModelService uncounted
                version, signature = getattr(self, "_answered", ("", ""))
                server.metrics.observe_request(model, api, "REST", code, time.perf_counter() - started, version, signature)

    def _body_json(self) -> dict:
        raw = self._read_body()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise _invalid(f"JSON Parse error: {exc}") from None
        if not isinstance(body, dict):
            raise _invalid("JSON Value: the request body must be a JSON object")
        return body

    def _call(self, model: str, version: str | None, label: str | None, api: str) -> dict:
        body = self._body_json()
        if api == "regress":
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by the local server")
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise _invalid("'signature_name' must be a string")
        manager = self.server.manager
        self._answered = (version or "", signature_name or "serving_default")
        servable = manager.resolve(model, version=int(version) if version else None, label=label)
        self._answered = (servable.version, signature_name or "serving_default")
        if api == "predict":
            signature = servable.signature(signature_name)
            arrays, row_format = parse_predict(body, signature)
            outputs = servable.predict_arrays(signature_name, arrays, max_batch_size=self.server.max_batch_size)
            return predict_response(outputs, row_format)
        from tensorflow_serving.apis import model_pb2

        # As TF Serving: no signature_name means serving_default, which must then be a classify signature.
        spec = model_pb2.ModelSpec(name=model, signature_name=signature_name)
        return classify_response(servable.classify(parse_classify(body, spec), max_batch_size=self.server.max_batch_size))

    def _get(self, model: str, version: str | None, label: str | None, sub: str | None) -> dict:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

        dump = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        if sub:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            spec = request.model_spec
        else:
            request = get_model_status_pb2.GetModelStatusRequest()
            spec = request.model_spec
        spec.name = model
        if version:
            spec.version.value = int(version)
        elif label:
            spec.version_label = label
        if not sub:
            response = self.server.model_service.GetModelStatus(request, _AbortContext())
            return json_format.MessageToDict(response, **dump)
        response = self.server.prediction_service.GetModelMetadata(request, _AbortContext())
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {"model_spec": json_format.MessageToDict(response.model_spec, **dump),
                "metadata": {"signature_def": json_format.MessageToDict(signature_map, **dump)}}


class _HttpError(Exception):
    """An HTTP-level refusal (no gRPC code): body too large, no length, unknown path."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
            self._http = _HTTPServer((host, port), _Handler)
        except OSError as exc:
            raise ServingError(f"cannot bind the REST port {host}:{port}: {exc}; choose another --rest_api_port "
                               f"(0 turns REST off) or --host") from exc
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

