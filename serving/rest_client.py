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

import base64
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from tensorflow.core.example import example_pb2

from serving import DEFAULT_MAX_MESSAGE_BYTES
from serving import signatures as sig
from serving.answers import HINTS as _HINTS
from serving.answers import ModelMetadata, Prediction, VersionStatus, as_inputs, batch_slices, check_client_options, joined
from serving.errors import ServingError
from serving.http_status import GRPC_CODE

_RETRY_STATUSES = (503,)


class RestClient:
    """Predict, Classify, metadata and status calls for one model over TF Serving's REST API; thread-safe."""

    def __init__(
        self,
        url: str,
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
        if "://" not in url:
            url = ("https://" if root_certificates is not None else "http://") + url
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServingError(f"REST address {url!r} is not an http:// or https:// URL with a host; "
                               f"pass e.g. http://localhost:8501")
        self.address = url.rstrip("/")
        self.model_name = model_name
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.max_batch_size = max_batch_size
        self.max_attempts = max(1, max_attempts)
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

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        if version is not None and version_label is not None:
            raise ServingError(f"name a version ({version}) or a version label ({version_label!r}), not both")
        path = f"{self._prefix}/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif version_label is not None:
            path += f"/labels/{urllib.parse.quote(version_label, safe='')}"
        return path + suffix

    def _request(self, method: str, path: str, body: Any, what: str) -> Any:
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        if payload is not None and len(payload) > self.max_message_bytes:
            raise ServingError(f"{what}: the request body is {len(payload)} bytes, more than max_message_bytes "
                               f"({self.max_message_bytes}); send smaller batches", grpc.StatusCode.RESOURCE_EXHAUSTED)
        deadline = time.monotonic() + self.timeout
        backoff = 0.1
        last: ServingError | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
                backoff = min(backoff * 2, 2.0)
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
                last = ServingError(self._message(what, grpc.StatusCode.UNAVAILABLE, None, f"{type(exc).__name__}: {exc}"),
                                    grpc.StatusCode.UNAVAILABLE)
                continue
            if status == 200:
                try:
                    return json.loads(data)
                except ValueError as exc:
                    raise ServingError(f"{what} at {self.address}: the answer is not JSON: {exc}",
                                       grpc.StatusCode.INTERNAL, http_status=status) from None
            code = GRPC_CODE.get(status, grpc.StatusCode.UNKNOWN)
            last = ServingError(self._message(what, code, status, _error_text(data)), code, http_status=status)
            if status not in _RETRY_STATUSES:
                raise last
        if last is not None:
            raise last
        raise ServingError(self._message(what, grpc.StatusCode.DEADLINE_EXCEEDED, None,
                                         f"no answer within {self.timeout:g} s"), grpc.StatusCode.DEADLINE_EXCEEDED)

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

    def _message(self, what: str, code: grpc.StatusCode, status: int | None, detail: str) -> str:
        hint = _HINTS.get(code, "see the server's log").format(address=self.address, timeout=self.timeout)
        http = f"HTTP {status} " if status is not None else ""
        return f"{what} of model {self.model_name!r} at {self.address} failed with {http}({code.name}): {detail}; {hint}"

    # -- calls --------------------------------------------------------------------------------------------

    def predict(
        self,
        inputs: np.ndarray | Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = sig.SERVING_DEFAULT,
        input_name: str = sig.IMAGE_INPUT,
    ) -> Prediction:
        """Predict on a batch (columnar "inputs"); an array goes to `input_name`. Large batches go as several requests."""
        arrays = as_inputs(inputs, input_name)
        path = self._path(version, version_label, ":predict")
        parts = []
        for part in self._chunks(arrays):
            body = {"signature_name": signature_name,
                    "inputs": {k: _to_json(a[part]) for k, a in arrays.items()}}
            answer = self._request("POST", path, body, f"Predict ({signature_name})")
            outputs = answer.get("outputs")
            if not isinstance(outputs, dict):
                names = self._outputs_of(signature_name, version, version_label)
                outputs = {names[0] if len(names) == 1 else "outputs": outputs}
            parts.append({k: _from_json(v) for k, v in outputs.items()})
        # TF Serving's REST answer does not say which version answered; only an asked-for version is known.
        return Prediction(joined(parts), version)

    def predict_png(self, pngs: Sequence[bytes], *, version: int | None = None, version_label: str | None = None,
                    **kwargs) -> Prediction:
        """Predict on encoded PNG files (bytes), sent as {"b64": ...} instances (row format)."""
        path = self._path(version, version_label, ":predict")
        signature_name = kwargs.get("signature_name", sig.PNG_SIGNATURE)
        pngs = list(pngs)
        columns: dict[str, list] = {}
        step = self.max_batch_size
        for start in range(0, len(pngs), step):
            body = {"signature_name": signature_name,
                    "instances": [{"b64": base64.b64encode(p).decode()} for p in pngs[start:start + step]]}
            answer = self._request("POST", path, body, f"Predict ({signature_name})")
            for row in answer["predictions"]:
                row = row if isinstance(row, dict) else {"outputs": row}
                for k, v in row.items():
                    columns.setdefault(k, []).append(v)
        return Prediction({k: _from_json(v) for k, v in columns.items()}, version)

    def classify(
        self,
        examples: Iterable[example_pb2.Example | bytes],
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = sig.CLASSIFY_SIGNATURE,
    ) -> dict[str, np.ndarray]:
        """Classify tf.Examples (or their serialized bytes): {"classes": str [b, k], "scores": float32 [b, k]}."""
        parsed = [e if isinstance(e, example_pb2.Example) else example_pb2.Example.FromString(e) for e in examples]
        path = self._path(version, version_label, ":classify")
        classes, scores = [], []
        step = self.max_batch_size
        for start in range(0, max(len(parsed), 1), step):
            body = {"signature_name": signature_name, "examples": [_example_json(e) for e in parsed[start:start + step]]}
            answer = self._request("POST", path, body, f"Classify ({signature_name})")
            for row in answer["result"]:
                classes.append([c[0] for c in row])
                scores.append([c[1] for c in row])
        return {
            sig.CLASSIFY_CLASSES_OUTPUT: np.array(classes, dtype=str),
            sig.CLASSIFY_SCORES_OUTPUT: np.array(scores, dtype=np.float32),
        }

    def get_model_metadata(self, *, version: int | None = None, version_label: str | None = None) -> ModelMetadata:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        answer = self._request("GET", self._path(version, version_label, "/metadata"), None, "GetModelMetadata")
        signature_map = json_format.ParseDict(answer["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap(),
                                              ignore_unknown_fields=True)
        return ModelMetadata(int(answer["model_spec"]["version"]), dict(signature_map.signature_def))

    def get_model_status(self, *, version: int | None = None, version_label: str | None = None,
                         wait_for_ready: bool = False) -> list[VersionStatus]:
        answer = self._request("GET", self._path(version, version_label), None, "GetModelStatus")
        out = []
        for s in answer.get("model_version_status", []):
            status = s.get("status", {})
            name = status.get("error_code", "OK")
            code = grpc.StatusCode[name].value[0] if name in grpc.StatusCode.__members__ else 2
            out.append(VersionStatus(int(s["version"]), s["state"], code, status.get("error_message", "")))
        return out

    def wait_until_available(self, timeout: float = 60.0) -> list[VersionStatus]:
        """Block until the model has an AVAILABLE version (polling the status, riding out a server not up yet)."""
        deadline = time.monotonic() + timeout
        last: ServingError | None = None
        while time.monotonic() < deadline:
            try:
                statuses = self.get_model_status()
                if any(s.state == "AVAILABLE" for s in statuses):
                    return statuses
            except ServingError as exc:
                if exc.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                last = exc
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
        why = f" (last answer: {last})" if last else ""
        raise ServingError(
            f"model {self.model_name!r} at {self.address} has no available version after {timeout:g} s{why}; "
            "check the server is running and its model base path holds a version", grpc.StatusCode.DEADLINE_EXCEEDED)

    # -- helpers ------------------------------------------------------------------------------------------

    def _outputs_of(self, signature_name: str, version: int | None, version_label: str | None) -> list[str]:
        """A columnar answer with one output carries no name: the signature's metadata has it."""
        if signature_name not in self._output_names:
            meta = self.get_model_metadata(version=version, version_label=version_label)
            self._output_names[signature_name] = sorted(meta.signature_defs[signature_name].outputs)
        return self._output_names[signature_name]

    def _chunks(self, inputs: Mapping[str, np.ndarray]) -> list[slice]:
        return batch_slices(inputs, max_message_bytes=self.max_message_bytes, max_batch_size=self.max_batch_size,
                            envelope=4096, nbytes=_json_bytes, unit="bytes of JSON")


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS with a server name to check that may differ from the host connected to (tls_server_name)."""

    def __init__(self, host, port, *, timeout, context, server_hostname):
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_hostname = server_hostname

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname or self.host)


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return data[:500].decode("utf-8", "replace") or "(empty answer)"


def _to_json(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        encode = np.vectorize(lambda b: {"b64": base64.b64encode(b if isinstance(b, bytes) else str(b).encode()).decode()},
                              otypes=[object])
        return encode(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _from_json(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


def _json_bytes(array: np.ndarray) -> float:
    if array.dtype == object or array.dtype.kind == "S":
        return sum(len(x) * 4 / 3 + 16 for x in array.ravel())
    return array.size * 24.0  # a float written in full takes up to ~22 characters


def _example_json(example: example_pb2.Example) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[name] = [{"b64": base64.b64encode(v).decode()} for v in feature.bytes_list.value]
        elif kind == "int64_list":
            out[name] = list(feature.int64_list.value)
        elif kind == "float_list":
            out[name] = list(feature.float_list.value)
    return out
