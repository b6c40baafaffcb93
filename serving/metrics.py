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

import contextlib
import inspect
import os
import re
import time
from dataclasses import dataclass
from types import SimpleNamespace

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
        self._counters = [m._name for m in (self.request_count, self.load_attempt_count, self.load_latency,
                                            self.version_request_count)]

    def observe_request(self, model_name: str, api: str, entrypoint: str, code: grpc.StatusCode | None,
                        seconds: float, version: int | str = "", signature_name: str = "") -> None:
        status = code.name if code is not None else "INVALID_ARGUMENT"
        micros = seconds * 1e6
        self.request_count.labels(model_name, status).inc()
        self.request_latency.labels(model_name, api, entrypoint).observe(micros)
        if signature_name:
            self.version_request_count.labels(model_name, str(version), signature_name, entrypoint, status).inc()
            self.version_request_latency.labels(model_name, str(version), signature_name, entrypoint).observe(micros)

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


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every PredictionService call on the gRPC port, as TF Serving's request metrics do: for
    the asyncio server, whose handlers are coroutines (Predict) or plain functions run on its worker threads."""

    _APIS = {"Predict": "predict", "Classify": "classify", "Regress": "regress",
             "MultiInference": "multi_inference", "GetModelMetadata": "GetModelMetadata"}

    def __init__(self, metrics: ServingMetrics):
        self._metrics = metrics
        self._wrapped: dict = {}  # (method, its handler) -> the timed handler: built once, not on every call

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: nothing to time, and nothing kept (clients choose its name)
            return None
        key = (handler_call_details.method, handler)
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = self._wrap(handler, handler_call_details.method)
        return wrapped

    def _wrap(self, handler, full_method: str):
        service, _, method = full_method.rpartition("/")
        api = self._APIS.get(method)
        if handler is None or handler.unary_unary is None or not service.endswith("tensorflow.serving.PredictionService") \
                or api is None:
            return handler
        behavior = handler.unary_unary
        metrics = self._metrics

        @contextlib.contextmanager
        def observed(request, context):
            """Times the call; `answer.response` (set by the handler) names the version that answered."""
            started, answer, code = time.perf_counter(), SimpleNamespace(response=None), grpc.StatusCode.OK
            try:
                yield answer
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                spec, response = request.model_spec, answer.response
                answered = response.model_spec if response is not None and hasattr(response, "model_spec") else spec
                version = answered.version.value if answered.HasField("version") else ""
                signature = (spec.signature_name or "serving_default") if api != "GetModelMetadata" else ""
                metrics.observe_request(spec.name, api, "GRPC", code, time.perf_counter() - started, version, signature)

        if inspect.iscoroutinefunction(behavior):
            async def timed(request, context):
                with observed(request, context) as answer:
                    answer.response = await behavior(request, context)
                    return answer.response
        else:
            def timed(request, context):
                with observed(request, context) as answer:
                    answer.response = behavior(request, context)
                    return answer.response

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
