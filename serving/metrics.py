"""Prometheus metrics of the local server, under the names TF Serving exports (its `/tensorflow/...` metrics,
with '/' turned into ':' as its Prometheus exporter does), in a registry of their own (never the global one).

    metrics = ServingMetrics()                      # read_monitoring_config(path) says whether and where
    metrics.observe_request("mnist", "predict", "GRPC", grpc.StatusCode.OK, 0.0012)
    body = metrics.exposition()                     # text format 0.0.4, served on the REST port

    :tensorflow:serving:request_count{model_name, status}                      requests, by gRPC status name
    :tensorflow:serving:request_latency{model_name, API, entrypoint}           histogram, microseconds
    :tensorflow:cc:saved_model:load_attempt_count{model_path, status}          loads: success | fail
    :tensorflow:cc:saved_model:load_latency{model_path}                        microseconds spent loading
    :tensorflow:serving:model_warmup_latency{model_path}                       histogram, microseconds
    :tensorflow:serving:batching_session:queuing_latency{thread_pool_name}     histogram, microseconds
    :tensorflow:serving:batching_session:padding_size{model_name, execution_batch_size}   histogram

and, where TF Serving's label sets stop short of what a canary roll-out needs, the same requests by version
and signature, under this project's prefix:

    :mnist_pipeline:serving:request_count{model_name, version, signature_name, entrypoint, status}
    :mnist_pipeline:serving:request_latency{model_name, version, signature_name, entrypoint}   microseconds

TF Serving writes counters without prometheus_client's `_total` suffix and without `_created` series;
`exposition()` writes them the same way, so dashboards and alerts made for the container work unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import time
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from serving.errors import ServingError

# TF Serving's request latency buckets: exponential, 10 us * 1.8^i, 33 of them (servables/tensorflow/util.cc).
_LATENCY_BUCKETS = tuple(10 * 1.8 ** i for i in range(33))
_BATCH_BUCKETS = tuple(2 ** i for i in range(15))


@dataclass(frozen=True)
class MonitoringConfig:
    enable: bool
    path: str


def read_monitoring_config(path: str | os.PathLike) -> MonitoringConfig:
    """Parse a MonitoringConfig text proto (tensorflow_serving/config/monitoring_config.proto)."""
    from serving.tfs_protos import message_classes, read_text_proto

    proto = read_text_proto(path, message_classes()["MonitoringConfig"](), what="monitoring config",
                            flag="--monitoring_config_file")
    # TF Serving's default path when prometheus_config.path is empty.
    metrics_path = proto.prometheus_config.path or "/monitoring/prometheus/metrics"
    if not metrics_path.startswith("/"):
        raise ServingError(f"monitoring config {os.fspath(path)!r}: prometheus_config.path {metrics_path!r} must start with '/'")
    return MonitoringConfig(proto.prometheus_config.enable, metrics_path)


class ServingMetrics:
    """The server's metrics; every method is thread-safe (prometheus_client's own locks)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "status"], registry=r)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.", ["model_path", "status"], registry=r)
        self.load_latency = Counter(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.", ["model_path"], registry=r)
        self.warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.", ["model_path"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing", ["thread_pool_name"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.padding_size = Histogram(
            ":tensorflow:serving:batching_session:padding_size",
            "Tracks the padding size distribution on batches.", ["model_name", "execution_batch_size"],
            buckets=_BATCH_BUCKETS, registry=r)
        self.version_request_count = Counter(
            ":mnist_pipeline:serving:request_count", "Requests by model version, signature, entrypoint and status.",
            ["model_name", "version", "signature_name", "entrypoint", "status"], registry=r)
        self.version_request_latency = Histogram(
            ":mnist_pipeline:serving:request_latency",
            "Wall time (in microseconds) of requests, by model version, signature and entrypoint.",
            ["model_name", "version", "signature_name", "entrypoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self._request_children: dict[tuple, tuple] = {}  # label values -> their children of the request metrics
        self._counters = [m._name for m in (self.request_count, self.load_attempt_count, self.load_latency,
                                            self.version_request_count)]

    def observe_request(self, model_name: str, api: str, entrypoint: str, code: grpc.StatusCode | None,
                        seconds: float, version: int | str = "", signature_name: str = "") -> None:
        status = code.name if code is not None else "INVALID_ARGUMENT"
        micros = seconds * 1e6
        key = (model_name, api, entrypoint, status, version, signature_name)
        children = self._request_children.get(key)
        if children is None:  # the label lookups, once per label set (not on every request)
            children = (self.request_count.labels(model_name, status), self.request_latency.labels(model_name, api, entrypoint))
            if signature_name:
                children += (self.version_request_count.labels(model_name, str(version), signature_name, entrypoint, status),
                             self.version_request_latency.labels(model_name, str(version), signature_name, entrypoint))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(micros)
        if signature_name:
            children[2].inc()
            children[3].observe(micros)

    def observe_load(self, model_path: str, ok: bool, load_seconds: float, warmup_seconds: float | None) -> None:
        self.load_attempt_count.labels(model_path, "success" if ok else "fail").inc()
        if ok:
            self.load_latency.labels(model_path).inc(load_seconds * 1e6)
            if warmup_seconds is not None:
                self.warmup_latency.labels(model_path).observe(warmup_seconds * 1e6)

    def observe_batch(self, model_name: str, rows: int, padded: int, waited_seconds: float) -> None:
        self.queuing_latency.labels("").observe(waited_seconds * 1e6)
        self.padding_size.labels(model_name, str(padded)).observe(padded - rows)

    def exposition(self) -> bytes:
        """Prometheus text format, counters named and typed as TF Serving writes them."""
        text = generate_latest(self.registry).decode()
        lines = []
        for line in text.splitlines():
            name = re.split(r"[{ ]", line.split(" ", 3)[2] if line.startswith("#") else line, maxsplit=1)[0]
            if name.endswith("_created"):
                continue
            for counter in self._counters:
                if name == f"{counter}_total":
                    line = line.replace(f"{counter}_total", counter, 1)
            lines.append(line)
        return ("\n".join(lines) + "\n").encode()


def timed_servicer(servicer, metrics: ServingMetrics):
    """`servicer` (a PredictionService servicer, before it is added to a server) with each of its methods counted
    and timed as TF Serving's request metrics do. The wrappers are made once, here, and registered in place of
    the methods: no interceptor runs on each call (gRPC's asyncio interceptor chain costs about a tenth of the
    server's throughput under load). Coroutine methods (Predict) get coroutine wrappers, plain ones plain."""
    for method, api in _GRPC_APIS.items():
        behavior = getattr(servicer, method, None)
        if behavior is not None:
            setattr(servicer, method, _timed(behavior, api, metrics))
    return servicer


_GRPC_APIS = {"Predict": "predict", "Classify": "classify", "Regress": "regress",
              "MultiInference": "multi_inference", "GetModelMetadata": "GetModelMetadata"}


class _Observed:
    """One call's timing, around its behavior: `response` is set by the caller when the call answers (it names
    the version that answered); a call that raises is counted under the status its context was given."""

    __slots__ = ("_api", "_metrics", "_request", "_context", "_started", "response")

    def __init__(self, api: str, metrics: ServingMetrics, request, context):
        self._api, self._metrics, self._request, self._context = api, metrics, request, context
        self.response = None

    def __enter__(self):
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        code = grpc.StatusCode.OK if exc_type is None else _failed_code(self._context, exc_type)
        spec, response = self._request.model_spec, self.response  # no response when the call raised
        answered = response.model_spec if response is not None and hasattr(response, "model_spec") else spec
        version = answered.version.value if answered.HasField("version") else ""
        signature = (spec.signature_name or "serving_default") if self._api != "GetModelMetadata" else ""
        self._metrics.observe_request(spec.name, self._api, "GRPC", code, time.perf_counter() - self._started,
                                      version, signature)


def _failed_code(context, exc_type) -> grpc.StatusCode:
    """The status of a call that raised: the one it was aborted with; for a coroutine that gRPC cancelled because
    the client went away, CANCELLED, or DEADLINE_EXCEEDED once the call's deadline has passed (what the client
    saw); anything else UNKNOWN."""
    code = context.code()
    if code:
        return code
    if issubclass(exc_type, asyncio.CancelledError):
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _timed(behavior, api: str, metrics: ServingMetrics):
    if inspect.iscoroutinefunction(behavior):
        async def timed(request, context):
            with _Observed(api, metrics, request, context) as observed:
                observed.response = await behavior(request, context)
                return observed.response
    else:
        def timed(request, context):
            with _Observed(api, metrics, request, context) as observed:
                observed.response = behavior(request, context)
                return observed.response

    return functools.wraps(behavior)(timed)
