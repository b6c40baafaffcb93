"""The local server's options, one typed object for both ways of giving them: the `[serve]` table of the
pipeline's TOML file and the `serve` command's flags, which are TF Serving's own (`--rest_api_port`,
`--enable_batching`, ...; a field named like a tensorflow_model_server flag has that flag's meaning).

    options = ServerOptions(port=0, rest_api_port=0, enable_batching=True)   # refused here if inconsistent

The `[serve]` keys are this dataclass's fields, and a flag only replaces a field, so a value is checked in
`__post_init__` the same way wherever it came from. The checks need no TensorFlow and no gRPC.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

MAX_POLL_INTERVAL = 86400.0  # a day; threading's waits overflow past about 9e9 s, and nan never waits
_INT32_MAX = 2**31 - 1  # gRPC's message size options are int32


@dataclass(frozen=True)
class ServerOptions:
    """What `mnist-pipeline serve` runs with; the `[serve]` table of the config file (every key optional)."""

    host: str = "127.0.0.1"  # interface of both ports; 0.0.0.0 exposes the server to the network
    port: int = 8500  # gRPC; 0: any free port
    rest_api_port: int = 8501  # REST; 0 turns REST off
    poll_interval: float = 1.0  # seconds between looks at the base path for new versions
    file_system_poll_wait_seconds: float | None = None  # TF Serving's poll_interval: 0 reads the base path once
    models_config: str | None = None  # a TF Serving models.config (--model_config_file): policies, labels
    model_config_file_poll_wait_seconds: float | None = None  # re-read it this often (0: never; None: every poll)
    model_name: str | None = None  # the one model served (with model_base_path: TF Serving's default "default")
    model_base_path: str | None = None  # TF Serving's meaning: <version>/ folders of ONE model (not push's)
    # gRPC worker threads: model calls without batching, metadata, status (a call waiting for its batch holds none)
    grpc_max_threads: int = 64
    tensorflow_intra_op_parallelism: int = 0  # 0: TensorFlow picks (one per core)
    tensorflow_inter_op_parallelism: int = 0
    enable_batching: bool = False
    batching_parameters_file: str | None = None  # BatchingParameters text proto; needs enable_batching
    monitoring_config_file: str | None = None  # MonitoringConfig text proto: Prometheus metrics on the REST port
    allow_version_labels_for_unavailable_models: bool = True  # false: refuse labels of versions not loaded
    tls_cert: str | None = None  # PEM server certificate (chain); with tls_key
    tls_key: str | None = None
    tls_client_ca: str | None = None  # require client certificates signed by this CA (mutual TLS)
    max_message_bytes: int = 64 * 1024 * 1024  # serving.DEFAULT_MAX_MESSAGE_BYTES: gRPC message or REST body
    max_batch_size: int = 1024  # serving.DEFAULT_MAX_BATCH_SIZE: examples one request may carry
    grace: float = 5.0  # on SIGTERM, seconds running calls get to finish

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"serve.{f.name} must be a finite number, got {value}")
        for name in ("port", "rest_api_port"):
            _check_range(name, getattr(self, name), 0, 65535)
        _check_range("poll_interval", self.poll_interval, 0.0, MAX_POLL_INTERVAL, low_open=True)
        for name in ("file_system_poll_wait_seconds", "model_config_file_poll_wait_seconds"):
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), 0.0, MAX_POLL_INTERVAL)
        _check_range("grpc_max_threads", self.grpc_max_threads, 1, 100_000)
        _check_range("tensorflow_intra_op_parallelism", self.tensorflow_intra_op_parallelism, 0, 100_000)
        _check_range("tensorflow_inter_op_parallelism", self.tensorflow_inter_op_parallelism, 0, 100_000)
        _check_range("max_message_bytes", self.max_message_bytes, 1, _INT32_MAX)
        _check_range("max_batch_size", self.max_batch_size, 1, _INT32_MAX)
        _check_range("grace", self.grace, 0.0, MAX_POLL_INTERVAL)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both serve.tls_cert and serve.tls_key (--tls-cert, --tls-key); pass both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("serve.tls_client_ca (--tls-client-ca, mutual TLS) needs tls_cert and tls_key too")
        if self.batching_parameters_file is not None and not self.enable_batching:
            raise ConfigError("serve.batching_parameters_file (--batching_parameters_file) needs enable_batching = true "
                              "(--enable_batching=true)")
        if self.model_base_path is not None and self.models_config is not None:
            raise ConfigError("pass serve.model_base_path (--model_base_path, one model) or serve.models_config "
                              "(--model_config_file), not both (as TF Serving)")

    @property
    def base_poll_interval(self) -> float:
        """Seconds between polls of the base path; 0: read once at start-up (file_system_poll_wait_seconds=0)."""
        return self.poll_interval if self.file_system_poll_wait_seconds is None else self.file_system_poll_wait_seconds

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def _check_range(name: str, value: float | int, low: float, high: float, *, low_open: bool = False) -> None:
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"serve.{name} must be a finite number in {bracket}{low:g}, {high:g}], got {value}")


def parse_bool(value: str) -> bool | str:
    """A TF Serving boolean flag's value (`--enable_batching=true`); anything else is handed on unchanged, so
    that the configuration refuses it with the message a wrong TOML value gets."""
    lowered = str(value).lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    return value


def local_file(path: str | None, key: str) -> Path | None:
    """A config file the options name. A container path /config/<file> that is not here is read from
    serving/deploy/<file>, the folder serving/deploy/docker-compose.yml mounts at /config."""
    from serving.errors import ServingError

    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p
    deploy = Path(__file__).parent / "deploy" / p.name
    if p.parts[:2] == ("/", "config") and deploy.is_file():
        log.info("%s %s is the container's path; reading %s", key, p, deploy)
        return deploy
    raise ServingError(f"serve.{key} (--{key}) {path!r} does not exist; pass an existing file")
