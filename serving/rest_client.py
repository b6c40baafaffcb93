"""A client for TF Serving's REST API (the real model server or `mnist-pipeline serve`), with the same calls and
answers as the gRPC `serving.client.ServingClient`: numpy in, numpy out.

Typical usage: `RestClient("http://localhost:8501").predict(images)["classes"]` (or `serving.client.connect(url)`).

    with RestClient("https://serving.example:8501", root_certificates="ca.pem", timeout=5.0) as client:
        client.wait_until_available(timeout=60)
        out = client.predict(images, version_label="stable")   # {"probabilities": [b, 10], "classes": [b]}

Every call has a deadline (`timeout`, for the whole call including retries). 503 (UNAVAILABLE) and a refused
connection are retried with exponential backoff, `max_attempts` in all. A batch is split so that no request
body exceeds `max_message_bytes` nor `max_batch_size` images, and a larger answer is refused. TLS with
`root_certificates`, mutual TLS with `certificate_chain` and `private_key` too. Each thread keeps its own
HTTP/1.1 connection open between calls. Errors are `ServingError`s that keep the HTTP status (`http_status`)
and the gRPC code TF Serving maps it from (`code`; 400 covers INVALID_ARGUMENT and FAILED_PRECONDITION).
JSON carries no dtypes: float answers come back as float32, integers as int64, strings as str.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np

from serving.answers import ModelMetadata, VersionStatus
from serving.client_core import ClientCore
from serving.errors import ServingError
from serving.http_status import GRPC_CODE
from serving.rest_codec import classify_answer, error_text, example_json, from_json, json_bytes, to_json

_RETRY_STATUSES = (503,)


class RestClient(ClientCore):
    """Predict, Classify, metadata and status calls for one model over TF Serving's REST API; thread-safe."""

    envelope = 4096
    unit = "bytes of JSON"
    _nbytes = staticmethod(json_bytes)

    def _connect(self, root_certificates, certificate_chain, private_key, tls_server_name: str | None) -> None:
        url = self.address
        if "://" not in url:
            url = ("https://" if root_certificates is not None else "http://") + url
        parsed = urllib.parse.urlsplit(url)
        self.address = url.rstrip("/")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServingError(f"REST address {url!r} is not an http:// or https:// URL with a host; "
                               f"pass e.g. http://localhost:8501")
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self._prefix = parsed.path.rstrip("/")
        self._ssl: ssl.SSLContext | None = None
        self._server_hostname = tls_server_name
        if parsed.scheme == "https" or root_certificates is not None:
            try:
                self._ssl = ssl.create_default_context(
                    cafile=os.fspath(root_certificates) if root_certificates is not None else None)
                if certificate_chain is not None:
                    self._ssl.load_cert_chain(os.fspath(certificate_chain), os.fspath(private_key))
            except (OSError, ssl.SSLError) as exc:
                raise ServingError(f"the TLS files cannot be used: {exc}; pass readable PEM files") from exc
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._output_names: dict[str, list[str]] = {}

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self._ssl is not None:
                connection = _TLSConnection(self._host, self._port, timeout=timeout, context=self._ssl,
                                            server_hostname=self._server_hostname)
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _path(self, version: int | None, version_label: str | None, suffix: str = "") -> str:
        path = f"{self._prefix}/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif version_label is not None:
            path += f"/labels/{urllib.parse.quote(version_label, safe='')}"
        return path + suffix

    def _request(self, method: str, path: str, body: Any, what: str, timeout: float | None = None) -> Any:
        """One call with the retry policy, all attempts within the deadline; the answer's JSON."""
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        if payload is not None and len(payload) > self.max_message_bytes:
            raise ServingError(f"{what}: the request body is {len(payload)} bytes, more than max_message_bytes "
                               f"({self.max_message_bytes}); send smaller batches", grpc.StatusCode.RESOURCE_EXHAUSTED)
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        last: ServingError | None = None
        for backoff in self.retry.backoffs():
            if backoff:
                time.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                status, data = self._once(method, path, payload, remaining)
            except TimeoutError:
                self._drop_connection()
                break
            except OSError as exc:  # refused, reset, TLS failures: UNAVAILABLE, as gRPC reports them; retried
                self._drop_connection()
                last = self._failure(what, grpc.StatusCode.UNAVAILABLE, f"{type(exc).__name__}: {exc}")
                continue
            if status == 200:
                try:
                    return json.loads(data)
                except ValueError as exc:
                    raise ServingError(f"{what} at {self.address}: the answer is not JSON: {exc}",
                                       grpc.StatusCode.INTERNAL, http_status=status) from None
            last = self._failure(what, GRPC_CODE.get(status, grpc.StatusCode.UNKNOWN), error_text(data), status)
            if status not in _RETRY_STATUSES:
                raise last
        if last is not None:
            raise last
        raise self._failure(what, grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout:g} s")

    def _once(self, method: str, path: str, payload: bytes | None, timeout: float) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for fresh in (False, True):  # a kept-alive connection the server closed meanwhile is reopened once
            connection = self._connection(timeout)
            reused = connection.sock is not None
            try:
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                length = response.getheader("Content-Length")
                if length is not None and int(length) > self.max_message_bytes:
                    self._drop_connection()
                    raise ServingError(f"the answer is {length} bytes, more than max_message_bytes "
                                       f"({self.max_message_bytes}); send smaller batches or raise it",
                                       grpc.StatusCode.RESOURCE_EXHAUSTED)
                data = response.read(self.max_message_bytes + 1)
                if len(data) > self.max_message_bytes:
                    self._drop_connection()
                    raise ServingError(f"the answer is more than max_message_bytes ({self.max_message_bytes}); "
                                       f"send smaller batches or raise it", grpc.StatusCode.RESOURCE_EXHAUSTED)
                if response.will_close:
                    self._drop_connection()
                return response.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_connection()
                if not reused or fresh:
                    raise
        raise AssertionError("unreachable")

    # -- the REST transport -------------------------------------------------------------------------------

    def _predict_once(self, arrays: Mapping[str, np.ndarray], version, version_label, signature_name: str):
        body = {"signature_name": signature_name, "inputs": {k: to_json(a) for k, a in arrays.items()}}
        answer = self._request("POST", self._path(version, version_label, ":predict"), body, f"Predict ({signature_name})")
        outputs = answer.get("outputs")
        if not isinstance(outputs, dict):
            names = self._outputs_of(signature_name, version, version_label)
            outputs = {names[0] if len(names) == 1 else "outputs": outputs}
        # TF Serving's REST answer does not say which version answered; only an asked-for version is known.
        return {k: from_json(v) for k, v in outputs.items()}, version

    def _classify_once(self, examples: list, version, version_label, signature_name: str):
        body = {"signature_name": signature_name, "examples": [example_json(e) for e in examples]}
        answer = self._request("POST", self._path(version, version_label, ":classify"), body,
                               f"Classify ({signature_name})")
        return (*classify_answer(answer), version)

    def _metadata_once(self, version, version_label) -> ModelMetadata:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        answer = self._request("GET", self._path(version, version_label, "/metadata"), None, "GetModelMetadata")
        signature_map = json_format.ParseDict(answer["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap(),
                                              ignore_unknown_fields=True)
        return ModelMetadata(int(answer["model_spec"]["version"]), dict(signature_map.signature_def))

    def _status_once(self, version, version_label, *, timeout: float, wait_for_ready: bool) -> list[VersionStatus]:
        answer = self._request("GET", self._path(version, version_label), None, "GetModelStatus", timeout)
        out = []
        for s in answer.get("model_version_status", []):
            status = s.get("status", {})
            name = status.get("error_code", "OK")
            code = grpc.StatusCode[name].value[0] if name in grpc.StatusCode.__members__ else 2
            out.append(VersionStatus(int(s["version"]), s["state"], code, status.get("error_message", "")))
        return out

    def _outputs_of(self, signature_name: str, version: int | None, version_label: str | None) -> list[str]:
        """A columnar answer with one output carries no name: the signature's metadata has it."""
        if signature_name not in self._output_names:
            meta = self.get_model_metadata(version=version, version_label=version_label)
            self._output_names[signature_name] = sorted(meta.signature_defs[signature_name].outputs)
        return self._output_names[signature_name]


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS with a server name to check that may differ from the host connected to (tls_server_name)."""

    def __init__(self, host, port, *, timeout, context, server_hostname):
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_hostname = server_hostname

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname or self.host)
