"""`mnist-pipeline serve`: the local TF Serving-compatible server (gRPC and REST) over the model base path.

It also takes the model server's own flags (`--rest_api_port=8501`, `--model_config_file=...`,
`--enable_batching=true`, ...), so the command line of serving/deploy/docker-compose.yml runs unchanged.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pipeline.cli import config_flag
from pipeline.config import Config

NAME = "serve"
HELP = "serve the pushed model versions over TF Serving's gRPC and REST APIs (local development server)"
DESCRIPTION = """\
Serve every model of the base path, <model base path>/<model>/<version>/ (mnist, fashion_mnist, ...), over
TF Serving's gRPC API (PredictionService: Predict, Classify,
GetModelMetadata; ModelService: GetModelStatus; grpc.health.v1) and its REST API (/v1/models/...: predict,
classify, status, metadata), for development and tests where the TF Serving container cannot run.
The newest version is served by default; the base path is polled for new versions, which are loaded and
warmed up before they become the default. Without --models-config (or --model_name/--model_base_path) the
models are those found in the base path at start (each folder holding a version) and push.model_name (the
dataset's, even before its first version), with TF Serving's default policy (the newest version only) and
no labels; with it (e.g. serving/deploy/models.config) its models, policies and version labels apply, and it
is re-read when it changes.

  mnist-pipeline serve                                  # gRPC 127.0.0.1:8500, REST :8501, <workdir>/serving/models
  mnist-pipeline serve --models-config serving/deploy/models.config --port 8500
  mnist-pipeline predict --server localhost:8500 digit.png

TF Serving's flags are accepted as the container takes them (docker-compose.yml's command line runs as is):
--port, --model_config_file and those listed below. Every option is also a key of the config file's [serve]
table, named as its flag (rest_api_port, enable_batching, tls_cert, ...); a flag overrides the file.
A config file path under /config/ (the container's mount of serving/deploy/) that does not exist here is read
from serving/deploy/; a model base path under /models/ maps to <model base path>/<model>.

SIGTERM or Ctrl-C stops it gracefully: running calls get --grace seconds to finish."""

# Run as `mnist-pipeline serve ... --some_flag`, cli.main hands unknown flags to run() (args.beam_args), which
# names a TF Serving flag the local server does not take apart from a misspelt one.
PASSTHROUGH_UNKNOWN_ARGS = True

# tensorflow_model_server's other flags (model_servers/main.cc): known, but not offered by the local server.
UNSUPPORTED_TF_SERVING_FLAGS = frozenset("""
    grpc_socket_path grpc_channel_arguments rest_api_num_threads rest_api_timeout_in_ms
    rest_api_enable_cors_support max_num_load_retries load_retry_interval_micros num_load_threads
    num_unload_threads tensorflow_session_parallelism per_process_gpu_memory_fraction saved_model_tags platform_config_file
    ssl_config_file model_version_policy enable_model_warmup num_request_iterations_for_warmup
    flush_filesystem_caches xla_cpu_compilation_enabled enable_signature_method_name_check
    prefer_tflite_model use_tflite_model tflite_num_threads tflite_interpreter_pool_size
    remove_unused_fields_from_bundle_metagraph mixed_precision skip_initialize_tpu enable_profiler
    thread_pool_factory_config_file use_alts_credentials grpc_max_concurrent_streams
    tensorflow_session_config_file enable_grpc_healthcheck_service version
""".split())

# tensorflow_model_server's flags the local server takes; each fills the ServerOptions field of its name, so the
# [serve] TOML key is the flag's name too. (flag, metavar, help)
TF_SERVING_FLAGS = (
    ("rest_api_port", "PORT", "REST port (default 8501; 0 turns REST off), on --host like the gRPC port"),
    ("grpc_max_threads", "N", "gRPC worker threads: model calls without batching, metadata, status (default 64)"),
    ("tensorflow_intra_op_parallelism", "N", "threads one TensorFlow op may use (default 0: TensorFlow picks)"),
    ("tensorflow_inter_op_parallelism", "N", "TensorFlow ops run at once (default 0: TensorFlow picks)"),
    ("model_name", "NAME", "with --model_base_path: the one model served (TF Serving's default: 'default')"),
    ("model_base_path", "DIR", "the folder holding <version>/ of one model (TF Serving's meaning; not --model-base-path)"),
    ("model_config_file_poll_wait_seconds", "SECONDS",
     "re-read the models config this often (0: never; default: at every base path poll)"),
    ("file_system_poll_wait_seconds", "SECONDS",
     "as --poll-interval, but 0 reads the base path once, at start-up (TF Serving's meaning)"),
    ("enable_batching", "BOOL", "merge concurrent requests into batches (default false)"),
    ("batching_parameters_file", "FILE",
     "BatchingParameters text proto (serving/deploy/batching_parameters.txt); needs --enable_batching"),
    ("monitoring_config_file", "FILE", "MonitoringConfig text proto: Prometheus metrics on the REST port at its path"),
    ("allow_version_labels_for_unavailable_models", "BOOL", "labels may name versions not loaded yet (default true, "
     "the local server's behaviour; false makes start-up refuse them, as TF Serving does)"),
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option is a `[serve]` key (serving.options.ServerOptions): a flag replaces the TOML value, and the
    value is checked in one place whichever way it came."""
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="the folder holding <model>/<version>/ (default: <workdir>/serving/models)")
    config_flag(parser, "--host", key="serve.host", metavar="HOST",
                help="interface to bind (default 127.0.0.1; 0.0.0.0 exposes the server to the network)")
    config_flag(parser, "--port", key="serve.port", type=int, metavar="PORT", help="gRPC port (default 8500; 0: any free port)")
    config_flag(parser, "--models-config", "--model_config_file", key="serve.models_config", metavar="FILE",
                help="a TF Serving models.config (ModelServerConfig text proto): version policy and labels")
    config_flag(parser, "--poll-interval", key="serve.poll_interval", type=float, metavar="SECONDS",
                help="how often the base path is checked for new versions (default 1.0)")
    config_flag(parser, "--tls-cert", key="serve.tls_cert", metavar="PEM",
                help="server certificate (chain); serve TLS with --tls-key")
    config_flag(parser, "--tls-key", key="serve.tls_key", metavar="PEM", help="the certificate's private key")
    config_flag(parser, "--tls-client-ca", key="serve.tls_client_ca", metavar="PEM",
                help="require client certificates signed by this CA (mutual TLS)")
    config_flag(parser, "--max-message-bytes", key="serve.max_message_bytes", type=int, metavar="N",
                help="largest request or response accepted, gRPC message or REST body (default 64 MiB)")
    config_flag(parser, "--max-batch-size", key="serve.max_batch_size", type=int, metavar="N",
                help="most examples one request may carry (default 1024; TF Serving's batching file says 256)")
    config_flag(parser, "--grace", key="serve.grace", type=float, metavar="SECONDS",
                help="on SIGTERM, how long running calls may take to finish (default 5)")
    tfs = parser.add_argument_group("TF Serving's flags (tensorflow_model_server), as the container takes them")
    tfs.add_argument("--rest-api-port", dest="serve.rest_api_port", type=int, default=argparse.SUPPRESS,
                     help=argparse.SUPPRESS)  # the spelling of the project's other flags
    for name, metavar, help_text in TF_SERVING_FLAGS:
        config_flag(tfs, f"--{name}", key=f"serve.{name}", metavar=metavar, help=help_text, **_value_kind(name))


def _value_kind(name: str) -> dict:
    """How argparse reads the ServerOptions field `name`: its type; a boolean as TF Serving's `--flag[=BOOL]`."""
    import typing

    from serving.options import ServerOptions, parse_bool

    hint = typing.get_type_hints(ServerOptions)[name]
    (kind,) = [k for k in (typing.get_args(hint) or (hint,)) if k is not type(None)]
    if kind is bool:
        return dict(nargs="?", const=True, type=parse_bool)
    return {} if kind is str else dict(type=kind)


def _check_unknown_flags(unknown: list[str]) -> None:
    from serving.errors import ServingError

    for arg in unknown:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name[2:].replace("-", "_") in UNSUPPORTED_TF_SERVING_FLAGS:
            raise ServingError(f"{name} is a TF Serving flag that the local server does not support; remove it "
                               f"(`mnist-pipeline serve --help` lists the flags it takes)")
        raise ServingError(f"unrecognized argument {arg!r}; `mnist-pipeline serve --help` lists the flags")


def served_models(config: Config) -> dict:
    """Without a models config: every model in the base path (mnist and fashion_mnist side by side) and
    push.model_name, each with TF Serving's default policy."""
    from pipeline.config import model_base_path
    from serving import model_registry
    from serving.model_manager import ModelSettings

    base = model_base_path(config)
    names = sorted({config.push.model_name, *model_registry.model_names(base)})
    return {name: ModelSettings(model_registry.model_dir(base, name)) for name in names}


def _models(config: Config):
    """The models to serve and the models config they came from (None without one), as TF Serving picks them:
    the config file, else --model_base_path (one model), else --model_name, else what the base path holds."""
    from pathlib import Path

    from pipeline.config import model_base_path
    from serving.model_manager import ModelSettings, read_models_config
    from serving.options import local_file

    options = config.serve
    base = model_base_path(config)
    models_config = local_file(options.models_config, "model_config_file")
    if models_config:
        return read_models_config(models_config, base), models_config
    if options.model_base_path:
        name = options.model_name or "default"  # TF Serving's default --model_name
        given = Path(options.model_base_path)
        return {name: ModelSettings(given if given.is_dir() or not given.is_absolute() else base / name)}, None
    if options.model_name:
        return {options.model_name: ModelSettings(base / options.model_name)}, None
    return served_models(config), None


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline.config import model_base_path

    # Before TensorFlow is imported (5-8 s): a misspelt flag is answered at once.
    _check_unknown_flags(getattr(args, "beam_args", None) or [])
    from serving.app import ServingApp

    models, models_config = _models(config)
    app = ServingApp(config.serve, models, model_base_path=model_base_path(config), models_config=models_config)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("received %s, shutting down (grace %.1f s)", signal.Signals(signum).name, config.serve.grace)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    app.start()
    for line in app.banner():
        print(line, flush=True)
    while not stop.wait(0.5):
        pass
    app.stop()
    print("stopped", flush=True)
    return 0
