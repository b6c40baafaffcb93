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
--port, --rest_api_port, --grpc_max_threads, --tensorflow_intra_op_parallelism,
--tensorflow_inter_op_parallelism, --model_name, --model_base_path, --model_config_file,
--model_config_file_poll_wait_seconds, --file_system_poll_wait_seconds, --enable_batching,
--batching_parameters_file, --monitoring_config_file, --allow_version_labels_for_unavailable_models.
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

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="the folder holding <model>/<version>/ (default: <workdir>/serving/models)")
    config_flag(parser, "--host", key="serve.host", metavar="HOST",
                help="interface to bind (default 127.0.0.1; 0.0.0.0 exposes the server to the network)")
    config_flag(parser, "--port", key="serve.port", type=int, metavar="PORT", help="gRPC port (default 8500; 0: any free port)")
    config_flag(parser, "--models-config", key="serve.models_config", metavar="FILE",
                help="a TF Serving models.config (ModelServerConfig text proto): version policy and labels")
    config_flag(parser, "--poll-interval", key="serve.poll_interval", type=float, metavar="SECONDS",
                help="how often the base path is checked for new versions (default 1.0)")
    parser.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain); serve TLS with --tls-key")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    parser.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    config_flag(parser, "--max-message-bytes", key="serve.max_message_bytes", type=int, metavar="N",
                help="largest request or response accepted, gRPC message or REST body (default 64 MiB)")
    config_flag(parser, "--max-batch-size", key="serve.max_batch_size", type=int, metavar="N",
                help="most examples one request may carry (default 1024; TF Serving's batching file says 256)")
    parser.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                        help="on SIGTERM, how long running calls may take to finish (default 5)")
    tfs = parser.add_argument_group("TF Serving's flags (tensorflow_model_server), as the container takes them")
    tfs.add_argument("--rest_api_port", "--rest-api-port", type=int, default=8501, metavar="PORT",
                     help="REST port (default 8501; 0 turns REST off), on --host like the gRPC port")
    tfs.add_argument("--grpc_max_threads", type=int, default=64, metavar="N",
                     help="threads answering gRPC calls (default 64: with batching, every waiting call holds one)")
    tfs.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0, metavar="N",
                     help="threads one TensorFlow op may use (default 0: TensorFlow picks, one per core)")
    tfs.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0, metavar="N",
                     help="TensorFlow ops run at once (default 0: TensorFlow picks)")
    tfs.add_argument("--model_name", metavar="NAME",
                     help="with --model_base_path: the one model served (TF Serving's default: 'default')")
    tfs.add_argument("--model_base_path", metavar="DIR",
                     help="the folder holding <version>/ of one model (TF Serving's meaning; not --model-base-path)")
    config_flag(tfs, "--model_config_file", key="serve.models_config", metavar="FILE",
                help="same as --models-config")
    tfs.add_argument("--model_config_file_poll_wait_seconds", type=float, metavar="SECONDS",
                     help="re-read the models config this often (0: never; default: at every base path poll)")
    tfs.add_argument("--file_system_poll_wait_seconds", type=float, metavar="SECONDS",
                     help="as --poll-interval, but 0 reads the base path once, at start-up (TF Serving's meaning)")
    tfs.add_argument("--enable_batching", nargs="?", const="true", default="false", metavar="BOOL",
                     help="merge concurrent requests into batches (default false)")
    tfs.add_argument("--batching_parameters_file", metavar="FILE",
                     help="BatchingParameters text proto (serving/deploy/batching_parameters.txt); needs --enable_batching")
    tfs.add_argument("--monitoring_config_file", metavar="FILE",
                     help="MonitoringConfig text proto: Prometheus metrics on the REST port at its path")
    tfs.add_argument("--allow_version_labels_for_unavailable_models", nargs="?", const="true", default=None,
                     metavar="BOOL", help="labels may name versions not loaded yet (the local server's behaviour "
                     "unless this is false, which makes start-up refuse them, as TF Serving does)")


def _bool(value: str, flag: str) -> bool:
    from serving.errors import ServingError

    lowered = str(value).lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ServingError(f"{flag}={value}: not a boolean; pass true or false")


def _check_unknown_flags(unknown: list[str]) -> None:
    from serving.errors import ServingError

    for arg in unknown:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name[2:].replace("-", "_") in UNSUPPORTED_TF_SERVING_FLAGS:
            raise ServingError(f"{name} is a TF Serving flag that the local server does not support; remove it "
                               f"(`mnist-pipeline serve --help` lists the flags it takes)")
        raise ServingError(f"unrecognized argument {arg!r}; `mnist-pipeline serve --help` lists the flags")


def _local_file(path: str | None, flag: str):
    """A config file named on the command line; a container path /config/<file> that is not here is read from
    serving/deploy/<file>, the folder docker-compose.yml mounts at /config."""
    from pathlib import Path

    import serving
    from serving.errors import ServingError

    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p
    deploy = Path(serving.__file__).parent / "deploy" / p.name
    if p.parts[:2] == ("/", "config") and deploy.is_file():
        log.info("%s %s is the container's path; reading %s", flag, p, deploy)
        return deploy
    raise ServingError(f"{flag} {path!r} does not exist; pass an existing file")


def served_models(config: Config) -> dict:
    """Without a models config: every model in the base path (mnist and fashion_mnist side by side) and
    push.model_name, each with TF Serving's default policy."""
    from pipeline.config import model_base_path
    from serving import model_registry
    from serving.model_manager import ModelSettings

    base = model_base_path(config)
    names = sorted({config.push.model_name, *model_registry.model_names(base)})
    return {name: ModelSettings(model_registry.model_dir(base, name)) for name in names}


def run(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.config import model_base_path
    from serving.errors import ServingError
    from serving.model_manager import ModelManager, ModelSettings, read_models_config
    from serving.server import LocalServer
    from serving.tls import read_pem_file

    _check_unknown_flags(getattr(args, "beam_args", None) or [])
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ServingError("TLS needs both --tls-cert and --tls-key; pass both or neither")
    if args.tls_client_ca and not args.tls_cert:
        raise ServingError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too")
    poll_interval = config.serve.poll_interval  # checked by the configuration: positive and finite
    if args.file_system_poll_wait_seconds is not None:
        poll_interval = args.file_system_poll_wait_seconds
        if not 0 <= poll_interval < float("inf"):
            raise ServingError(f"--file_system_poll_wait_seconds must be 0 or more seconds, got {poll_interval}")
    if args.grpc_max_threads < 1:
        raise ServingError(f"--grpc_max_threads must be positive, got {args.grpc_max_threads}")
    if not 0 <= args.rest_api_port <= 65535:
        raise ServingError(f"--rest_api_port must be in 0..65535, got {args.rest_api_port}")
    enable_batching = _bool(args.enable_batching, "--enable_batching")
    if args.batching_parameters_file and not enable_batching:
        raise ServingError("--batching_parameters_file needs --enable_batching=true")
    if args.model_base_path and config.serve.models_config:
        raise ServingError("pass --model_base_path (one model) or --model_config_file, not both (as TF Serving)")
    poll_wait = args.model_config_file_poll_wait_seconds
    if poll_wait is not None and poll_wait < 0:
        raise ServingError(f"--model_config_file_poll_wait_seconds must not be negative, got {poll_wait}")
    base = model_base_path(config)
    models_config = _local_file(config.serve.models_config, "--model_config_file")
    if models_config:
        models = read_models_config(models_config, base)
    elif args.model_base_path:
        name = args.model_name or "default"  # TF Serving's default --model_name
        given = Path(args.model_base_path)
        models = {name: ModelSettings(given if given.is_dir() or not given.is_absolute() else base / name)}
    elif args.model_name:
        models = {args.model_name: ModelSettings(base / args.model_name)}
    else:
        models = served_models(config)
    for name, settings in models.items():
        if not settings.base_path.is_dir():
            log.warning("model %s: %s does not exist yet; it is polled every %.1f s", name, settings.base_path,
                        poll_interval)

    if args.tensorflow_intra_op_parallelism < 0 or args.tensorflow_inter_op_parallelism < 0:
        raise ServingError("--tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism must be >= 0")
    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        import tensorflow as tf  # set before the first model loads: TensorFlow fixes its thread pools then

        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)

    if args.tensorflow_intra_op_parallelism < 0 or args.tensorflow_inter_op_parallelism < 0:
        raise ServingError("--tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism must be >= 0")
    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        import tensorflow as tf  # set before the first model loads: TensorFlow fixes its thread pools then

        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)

    metrics = monitoring = None
    if args.monitoring_config_file:
        from serving.metrics import ServingMetrics, read_monitoring_config

        monitoring = read_monitoring_config(_local_file(args.monitoring_config_file, "--monitoring_config_file"))
        if monitoring.enable:
            if args.rest_api_port == 0:
                raise ServingError("--monitoring_config_file serves metrics on the REST port; set --rest_api_port")
            metrics = ServingMetrics()
    batcher = None
    if enable_batching:
        from serving.batching import BatchScheduler, read_batching_parameters

        params = read_batching_parameters(_local_file(args.batching_parameters_file, "--batching_parameters_file"))
        batcher = BatchScheduler(params, on_batch=metrics.observe_batch if metrics else None)
        log.info("batching on: %s", params)
    manager = ModelManager(models, poll_interval=poll_interval,
                           models_config=models_config, model_base_path=base, config_poll_interval=poll_wait,
                           batcher=batcher, on_load=metrics.observe_load if metrics else None)
    tls = dict(tls_cert=read_pem_file(args.tls_cert, "--tls-cert"), tls_key=read_pem_file(args.tls_key, "--tls-key"),
               client_ca=read_pem_file(args.tls_client_ca, "--tls-client-ca"))
    server = LocalServer(manager, host=config.serve.host, port=config.serve.port,
                         max_message_bytes=config.serve.max_message_bytes, max_batch_size=config.serve.max_batch_size,
                         metrics=metrics, max_workers=args.grpc_max_threads, **tls)
    rest = None
    if args.rest_api_port:
        from serving.rest import RestServer

        rest = RestServer(manager, host=config.serve.host, port=args.rest_api_port,
                          max_body_bytes=config.serve.max_message_bytes, max_batch_size=config.serve.max_batch_size,
                          metrics=metrics, metrics_path=monitoring.path if metrics else None, **tls)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("received %s, shutting down (grace %.1f s)", signal.Signals(signum).name, args.grace)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.allow_version_labels_for_unavailable_models is not None and \
            not _bool(args.allow_version_labels_for_unavailable_models, "--allow_version_labels_for_unavailable_models"):
        manager.poll()  # what is on disk now; start() polls again and finds nothing new
        _check_labels(manager, models)
    if batcher is not None:
        batcher.start()
    server.start()
    if rest is not None:
        rest.start()
    for name in manager.model_names:
        try:
            versions = [s.version for s in manager.statuses(name) if s.state == "AVAILABLE"]
        except Exception:
            versions = []
        print(f"model {name}: versions {versions or 'none yet'} from {models[name].base_path}", flush=True)
    print(f"serving on {server.address} ({'TLS' if args.tls_cert else 'plaintext'}); SIGTERM or Ctrl-C stops", flush=True)
    if rest is not None:
        print(f"REST API on {rest.url}" + (f", metrics at {rest.url}{monitoring.path}" if metrics else ""), flush=True)
    if batcher is not None:
        print(f"batching: up to {batcher.params.max_batch_size} images, {batcher.params.batch_timeout_micros} us "
              f"timeout, {batcher.params.num_batch_threads} threads", flush=True)
    while not stop.wait(0.5):
        pass
    if rest is not None:
        rest.stop()
    server.stop(args.grace)
    if batcher is not None:
        batcher.stop()
    print("stopped", flush=True)
    return 0


def _check_labels(manager, models) -> None:
    """TF Serving without --allow_version_labels_for_unavailable_models refuses labels of versions not loaded."""
    from serving.errors import ServingError

    for name, settings in models.items():
        loaded = {s.version for s in manager.statuses(name) if s.state == "AVAILABLE"} if settings.labels else set()
        for label, version in settings.labels.items():
            if version not in loaded:
                raise ServingError(f"label {label!r} of model {name} names version {version}, which is not loaded; "
                                   f"push it, move the label, or pass --allow_version_labels_for_unavailable_models=true")
