"""The scoring job's options beyond the `score` config section: input layout, a served model, a time limit.

Light on purpose (no Beam, no TensorFlow): `mnist-pipeline score --help` and `python -m components.score
--help` build their flags from `add_arguments` without importing either.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from serving import signatures as sig

INPUT_FORMATS = ("tfrecord", "parquet", "csv", "images")
ENGINES = ("beam", "spark")  # Beam RunInference (any Beam runner), or Spark (components/score/spark_job.py)


@dataclass(frozen=True)
class Columns:
    """Column names of Parquet and CSV inputs (the pixel columns are always pixel0..pixel783)."""

    image: str = sig.EXAMPLE_IMAGE_FEATURE
    label: str = sig.EXAMPLE_LABEL_FEATURE
    key: str = sig.EXAMPLE_KEY_FEATURE


@dataclass(frozen=True)
class ServerRef:
    """A model served over TF Serving's gRPC API, and how to call it (see `beam_model.ServingModelHandler`)."""

    address: str  # HOST:PORT
    model_name: str = sig.MODEL_NAME
    version: int | None = None
    version_label: str | None = None
    timeout: float = 30.0  # deadline of one batch's request, seconds
    retries: int = 3  # Beam's retries, with exponential backoff, of a batch answered UNAVAILABLE
    throttle_delay_s: float = 1.0  # Beam's client-side throttling: the wait when recent requests failed
    root_certificates: str | None = None  # PEM file: TLS
    certificate_chain: str | None = None  # PEM files: mutual TLS
    private_key: str | None = None


@dataclass(frozen=True)
class JobOptions:
    input_format: str | None = None  # None: from the input's extension
    columns: Columns = Columns()
    server: ServerRef | None = None
    timeout_s: float | None = None  # the whole job, after its checks; None: no limit
    engine: str = "beam"
    spark_master: str | None = None  # --engine spark: a Spark master URL; None: local[*]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("input layout")
    g.add_argument("--input-format", choices=INPUT_FORMATS, default=None,
                   help="tfrecord, parquet, csv or images (default: from the extension; a folder: images)")
    g.add_argument("--image-column", default=Columns.image, metavar="NAME",
                   help="Parquet column of encoded PNG/JPEG bytes (default %(default)s; else pixel0..pixel783)")
    g.add_argument("--label-column", default=Columns.label, metavar="NAME", help="optional (default %(default)s)")
    g.add_argument("--key-column", default=Columns.key, metavar="NAME", help="optional (default %(default)s)")
    s = parser.add_argument_group("scoring through a served model (TF Serving's gRPC API)")
    s.add_argument("--server", metavar="HOST:PORT|URL", default=None,
                   help="score with the model this server serves instead of a local SavedModel: HOST:PORT for "
                        "TF Serving's gRPC API, http(s)://HOST:PORT for its REST API")
    s.add_argument("--server-model", default=sig.MODEL_NAME, metavar="NAME", help="model name (default %(default)s)")
    version = s.add_mutually_exclusive_group()
    version.add_argument("--server-version", type=int, default=None, metavar="N", help="a version (default: newest)")
    version.add_argument("--server-version-label", default=None, metavar="LABEL", help="a version label")
    s.add_argument("--server-timeout", type=float, default=ServerRef.timeout, metavar="S",
                   help="deadline of one batch's request (default %(default)s)")
    s.add_argument("--server-retries", type=int, default=ServerRef.retries, metavar="N",
                   help="retries with backoff of a batch answered UNAVAILABLE (default %(default)s)")
    s.add_argument("--server-throttle-delay", type=float, default=ServerRef.throttle_delay_s, metavar="S",
                   help="client-side throttling: wait S seconds before a request while recent ones failed "
                        "(default %(default)s)")
    s.add_argument("--server-root-certs", default=None, metavar="PEM", help="TLS: the CA certificates")
    s.add_argument("--server-cert", default=None, metavar="PEM", help="mutual TLS: client certificate chain")
    s.add_argument("--server-key", default=None, metavar="PEM", help="mutual TLS: client private key")
    parser.add_argument("--job-timeout", type=float, default=None, metavar="S",
                        help="fail the job when it has not finished after S seconds (e.g. no SDK worker started)")
    e = parser.add_argument_group("engine")
    e.add_argument("--engine", choices=ENGINES, default="beam",
                   help="beam (RunInference on any Beam runner; default) or spark (pip install \"mnist-pipeline[spark]\")")
    e.add_argument("--spark-master", default=None, metavar="URL",
                   help="--engine spark: local[N] or spark://HOST:PORT (default local[*])")


def from_args(args: argparse.Namespace) -> JobOptions:
    server = None
    if args.server:
        server = ServerRef(args.server, model_name=args.server_model, version=args.server_version,
                           version_label=args.server_version_label, timeout=args.server_timeout,
                           retries=args.server_retries, throttle_delay_s=args.server_throttle_delay,
                           root_certificates=args.server_root_certs,
                           certificate_chain=args.server_cert, private_key=args.server_key)
    return JobOptions(input_format=args.input_format,
                      columns=Columns(args.image_column, args.label_column, args.key_column),
                      server=server, timeout_s=args.job_timeout, engine=args.engine, spark_master=args.spark_master)


def from_config(config) -> JobOptions:
    """JobOptions from the `score` config section's flat fields (`pipeline.config.ScoreConfig`); fields it lacks
    keep their defaults."""
    get = lambda name, default=None: getattr(config, name, default)  # noqa: E731
    server = None
    if get("server"):
        server = ServerRef(get("server"), model_name=get("server_model", sig.MODEL_NAME),
                           version=get("server_version"), version_label=get("server_version_label"),
                           timeout=get("server_timeout", ServerRef.timeout), retries=get("server_retries", ServerRef.retries),
                           throttle_delay_s=get("server_throttle_delay", ServerRef.throttle_delay_s),
                           root_certificates=get("server_root_certs"), certificate_chain=get("server_cert"),
                           private_key=get("server_key"))
    return JobOptions(input_format=get("input_format"),
                      columns=Columns(get("image_column", Columns.image), get("label_column", Columns.label),
                                      get("key_column", Columns.key)),
                      server=server, timeout_s=get("job_timeout"), engine=get("engine", "beam") or "beam",
                      spark_master=get("spark_master"))
