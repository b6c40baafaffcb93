"""`mnist-pipeline serve`: the local TF Serving-compatible gRPC server over the model base path."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pipeline.cli import config_flag
from pipeline.config import Config

NAME = "serve"
HELP = "serve the pushed model versions over TF Serving's gRPC API (local development server)"
DESCRIPTION = """\
Serve <model base path>/mnist/<version>/ over TF Serving's gRPC API (PredictionService: Predict, Classify,
GetModelMetadata; ModelService: GetModelStatus; grpc.health.v1), for development and tests where the
TF Serving container cannot run. The newest version is served by default; the base path is polled for new
versions, which are loaded and warmed up before they become the default. Without --models-config the
version policy is TF Serving's default (the newest version only) and there are no labels; with it (e.g.
serving/deploy/models.config) its policy and version labels apply, and it is re-read when it changes.

  mnist-pipeline serve                                  # 127.0.0.1:8500, <workdir>/serving/models
  mnist-pipeline serve --models-config serving/deploy/models.config --port 8500
  mnist-pipeline predict --server localhost:8500 digit.png

SIGTERM or Ctrl-C stops it gracefully: running calls get --grace seconds to finish."""

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
                help="largest request or response accepted (default 64 MiB)")
    config_flag(parser, "--max-batch-size", key="serve.max_batch_size", type=int, metavar="N",
                help="most examples one request may carry (default 1024; TF Serving's batching file says 256)")
    parser.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                        help="on SIGTERM, how long running calls may take to finish (default 5)")


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline.config import model_base_path
    from serving.errors import ServingError
    from serving.model_manager import ModelManager, ModelSettings, read_models_config
    from serving.server import LocalServer
    from serving.tls import read_pem_file

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ServingError("TLS needs both --tls-cert and --tls-key; pass both or neither")
    if args.tls_client_ca and not args.tls_cert:
        raise ServingError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too")
    base = model_base_path(config)
    if config.serve.models_config:
        models = read_models_config(config.serve.models_config, base)
    else:
        models = {config.push.model_name: ModelSettings(base / config.push.model_name)}
    for name, settings in models.items():
        if not settings.base_path.is_dir():
            log.warning("model %s: %s does not exist yet; it is polled every %.1f s", name, settings.base_path,
                        config.serve.poll_interval)
    manager = ModelManager(models, poll_interval=config.serve.poll_interval,
                           models_config=config.serve.models_config, model_base_path=base)
    server = LocalServer(
        manager, host=config.serve.host, port=config.serve.port,
        tls_cert=read_pem_file(args.tls_cert, "--tls-cert"), tls_key=read_pem_file(args.tls_key, "--tls-key"),
        client_ca=read_pem_file(args.tls_client_ca, "--tls-client-ca"),
        max_message_bytes=config.serve.max_message_bytes, max_batch_size=config.serve.max_batch_size,
    )
    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("received %s, shutting down (grace %.1f s)", signal.Signals(signum).name, args.grace)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    for name in manager.model_names:
        try:
            versions = [s.version for s in manager.statuses(name) if s.state == "AVAILABLE"]
        except Exception:
            versions = []
        print(f"model {name}: versions {versions or 'none yet'} from {models[name].base_path}", flush=True)
    print(f"serving on {server.address} ({'TLS' if args.tls_cert else 'plaintext'}); SIGTERM or Ctrl-C stops", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(args.grace)
    print("stopped", flush=True)
    return 0
