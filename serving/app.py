"""The local server as `mnist-pipeline serve` runs it: `ServerOptions` and the models to serve in, the parts
(batch scheduler, metrics, model manager, gRPC server, REST server) built, started and stopped in order.

    app = ServingApp(ServerOptions(port=0), {"mnist": ModelSettings(base / "mnist")}, model_base_path=base)
    app.start(); print(app.banner()); ...; app.stop()

Everything that can be refused (files, TLS material, ports in use, labels of missing versions) is refused by
the constructor or `start()` with a `ServingError`, before the ports answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from serving.errors import ServingError
from serving.model_manager import ModelManager, ModelSettings
from serving.options import ServerOptions, local_file

log = logging.getLogger(__name__)


def set_tensorflow_threads(options: ServerOptions) -> None:
    """TensorFlow's thread pools, before the first model loads (TensorFlow fixes them then)."""
    if options.tensorflow_intra_op_parallelism or options.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(options.tensorflow_intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(options.tensorflow_inter_op_parallelism)


class ServingApp:
    """One server process: both protocols over one `ModelManager`, with optional batching and metrics."""

    def __init__(self, options: ServerOptions, models: Mapping[str, ModelSettings], *,
                 model_base_path: str | os.PathLike, models_config: str | os.PathLike | None = None):
        from serving.tls import read_pem_file

        self.options = options
        self.models = dict(models)
        # The files first, then TensorFlow (5-8 s to import): a bad file is refused at once.
        self.metrics, self.metrics_path = self._metrics()
        self.batcher = self._batcher()
        tls = dict(tls_cert=read_pem_file(options.tls_cert, "--tls-cert"),
                   tls_key=read_pem_file(options.tls_key, "--tls-key"),
                   client_ca=read_pem_file(options.tls_client_ca, "--tls-client-ca"))
        set_tensorflow_threads(options)
        from serving.server import LocalServer

        poll = options.base_poll_interval
        for name, settings in self.models.items():
            if not settings.base_path.is_dir():
                log.warning("model %s: %s does not exist yet; it is polled every %.1f s", name, settings.base_path, poll)
        self.manager = ModelManager(
            self.models, poll_interval=poll, models_config=models_config, model_base_path=model_base_path,
            config_poll_interval=options.model_config_file_poll_wait_seconds, batcher=self.batcher,
            on_load=self.metrics.observe_load if self.metrics else None, freeze_gc=True)
        self.server = LocalServer(self.manager, host=options.host, port=options.port,
                                  max_message_bytes=options.max_message_bytes, max_batch_size=options.max_batch_size,
                                  metrics=self.metrics, max_workers=options.grpc_max_threads, **tls)
        self.rest = None
        if options.rest_api_port:
            from serving.rest import RestServer

            try:
                self.rest = RestServer(self.manager, host=options.host, port=options.rest_api_port,
                                       max_body_bytes=options.max_message_bytes, max_batch_size=options.max_batch_size,
                                       metrics=self.metrics, metrics_path=self.metrics_path, **tls)
            except ServingError:
                self.server.stop(0)
                raise

    def _metrics(self):
        if self.options.monitoring_config_file is None:
            return None, None
        from serving.metrics import ServingMetrics, read_monitoring_config

        monitoring = read_monitoring_config(local_file(self.options.monitoring_config_file, "monitoring_config_file"))
        if not monitoring.enable:
            return None, None
        if self.options.rest_api_port == 0:
            raise ServingError("--monitoring_config_file serves metrics on the REST port; set --rest_api_port")
        return ServingMetrics(), monitoring.path

    def _batcher(self):
        if not self.options.enable_batching:
            return None
        from serving.batching import BatchScheduler, read_batching_parameters

        params = read_batching_parameters(local_file(self.options.batching_parameters_file, "batching_parameters_file"))
        log.info("batching on: %s", params)
        return BatchScheduler(params, on_batch=self.metrics.observe_batch if self.metrics else None)

    def start(self) -> None:
        """Load what is there, refuse labels of missing versions if told to, then open the ports."""
        if not self.options.allow_version_labels_for_unavailable_models:
            self.manager.poll()  # what is on disk now; start() polls again and finds nothing new
            self._check_labels()
        if self.batcher is not None:
            self.batcher.start()
        self.server.start()
        if self.rest is not None:
            self.rest.start()

    def stop(self) -> None:
        """REST first (it answers 503 meanwhile), then gRPC with its grace period, then the batch threads."""
        if self.rest is not None:
            self.rest.stop()
        self.server.stop(self.options.grace)
        if self.batcher is not None:
            self.batcher.stop()

    def _check_labels(self) -> None:
        """TF Serving without --allow_version_labels_for_unavailable_models refuses labels of versions not loaded."""
        for name, settings in self.models.items():
            statuses = self.manager.statuses(name) if settings.labels else []
            loaded = {s.version for s in statuses if s.state == "AVAILABLE"}
            for label, version in settings.labels.items():
                if version not in loaded:
                    raise ServingError(f"label {label!r} of model {name} names version {version}, which is not loaded; "
                                       "push it, move the label, or pass --allow_version_labels_for_unavailable_models=true")

    def banner(self) -> list[str]:
        """What the server says once it answers: models and versions, ports, batching."""
        lines = []
        for name in self.manager.model_names:
            try:
                versions = [s.version for s in self.manager.statuses(name) if s.state == "AVAILABLE"]
            except Exception:
                versions = []
            lines.append(f"model {name}: versions {versions or 'none yet'} from {self.models[name].base_path}")
        lines.append(f"serving on {self.server.address} ({'TLS' if self.options.tls else 'plaintext'}); "
                     "SIGTERM or Ctrl-C stops")
        if self.rest is not None:
            lines.append(f"REST API on {self.rest.url}" + (f", metrics at {self.rest.url}{self.metrics_path}"
                                                           if self.metrics else ""))
        if self.batcher is not None:
            p = self.batcher.params
            lines.append(f"batching: up to {p.max_batch_size} images, {p.batch_timeout_micros} us timeout, "
                         f"{p.num_batch_threads} threads")
        return lines
