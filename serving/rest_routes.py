"""The REST server's request handling: TF Serving's routes (http_rest_api_handler.cc's patterns), each call run
through the same `ModelManager`, `Servable` and gRPC servicers as the gRPC port, errors answered as TF Serving
answers them ({"error": ...} with the HTTP status of the gRPC code, serving.http_status). The JSON is
`serving.rest_codec`'s; the server's life cycle is `serving.rest`'s.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import grpc
import orjson

from serving.errors import MESSAGE_LIMIT, RequestError, echo
from serving.http_status import HTTP_STATUS
from serving.rest_codec import classify_response, invalid, parse_classify, parse_predict, predict_response

log = logging.getLogger(__name__)

# TF Serving's own route patterns (http_rest_api_handler.cc); they match the raw path, not a URL-decoded one.
_PREDICTION_API = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_MODEL_STATUS_API = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")


class _AbortContext:
    """Stands in for a gRPC ServicerContext so REST status and metadata run the gRPC servicers' own code."""

    def abort(self, code, details):
        raise RequestError(code, details)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    server_version = "mnist-pipeline-serving"
    sys_version = ""  # the Server header names no Python version
    server: Any  # serving.rest._HTTPServer

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
                    raise invalid("Missing model name in request.")
                self._send_json(200, self._get(model, version, label, sub))
                return
            raise invalid(f"Malformed request: {method} {path}")
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
            # orjson reads the 17 kB of a batch-1 `instances` body in a third of the standard library's time; what
            # it refuses (NaN and Infinity, which TF Serving reads too, integers past 64 bits, UTF-16 bodies,
            # nesting past 1024) goes to the standard library, which reads it or names the error.
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise invalid(f"JSON Parse error: {exc}") from None
        if not isinstance(body, dict):
            raise invalid("JSON Value: the request body must be a JSON object")
        return body

    def _call(self, model: str, version: str | None, label: str | None, api: str) -> dict:
        body = self._body_json()
        if api == "regress":
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by the local server")
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
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


