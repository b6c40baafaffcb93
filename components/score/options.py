"""The scoring job's options: the `[score]` config section, and the flags both entry points generate from it.

    add_arguments(parser, dest_prefix="score.", suppress_defaults=True)   # mnist-pipeline score
    add_arguments(parser, skip=("split",), required=("input_pattern", "output"))  # python -m components.score
    config = from_args(args); options = from_config(config)

`ScoreConfig` is the one definition: its fields are the TOML keys, and a field with a `flag` in its metadata
(`option(...)`) is a flag of both commands, its type taken from the annotation and its help and default from
the field. A new option is one field here. Light on purpose (no Beam, no TensorFlow): both `--help`s build
their flags from here. The flags for Beam are checked in `components.score.beam_flags`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from components.params import check_finite
from pipeline.errors import ConfigError
from serving import signatures as sig

INPUT_FORMATS = ("tfrecord", "parquet", "csv", "images")
OUTPUT_FORMATS = ("jsonl", "csv", "parquet")  # predictions; failed rows are always JSON lines
ENGINES = ("beam", "spark")  # Beam RunInference (any Beam runner), or Spark (components/score/spark_job.py)

_LAYOUT = "input layout"
_SERVER = "scoring through a served model (TF Serving's gRPC or REST API)"
_ENGINE = "engine"


def option(default: Any, flag: str | None = None, help: str = "", *, none: str = "", metavar: str | None = None,
           choices: Sequence[str] | None = None, group: str | None = None, exclusive: str | None = None) -> Any:
    """A `ScoreConfig` field; with `flag`, also a flag (in argument group `group`, mutually exclusive with the
    other flags of the same `exclusive` name). Its help ends with its default, or `none`: what None means."""
    spec = {"flag": flag, "help": help, "none": none, "metavar": metavar, "choices": choices, "group": group,
            "exclusive": exclusive}
    return field(default=default, metadata=spec if flag else {})


@dataclass(frozen=True)
class ScoreConfig:
    SECTION: ClassVar[str] = "score"

    model: str | None = option(None, "--model", "SavedModel folder, or model base path <base>/<model> (its newest "
                               "version)", none="the workdir's pushed model", metavar="PATH")
    input_pattern: str | None = option(
        None, "--input", "file pattern or folder: TFRecord of tf.Example, Parquet, CSV (Kaggle's layout) or image "
        "files; the format comes from the extension or --input-format", metavar="PATTERN", exclusive="source")
    split: str = option("test", "--split", "a split of the workdir's TFDS dataset, scored when no --input is given",
                        metavar="NAME", exclusive="source")
    output: str | None = option(None, "--output", "output folder, local or gs://...",
                                none="<workdir>/runs/<run id>/score", metavar="DIR")
    output_format: str = option("jsonl", "--format", "format of the predictions", choices=OUTPUT_FORMATS)
    min_batch_size: int = option(1, "--min-batch-size", "smallest batch RunInference sends to the model", metavar="N")
    max_batch_size: int = option(256, "--max-batch-size", "largest batch RunInference sends to the model", metavar="N")
    # Beam pipeline options (--runner=..., --direct_num_workers=...): the commands' unknown flags, or a TOML list.
    beam_args: tuple[str, ...] = ()
    input_format: str | None = option(None, "--input-format", "the inputs' format",
                                      none="from the extension; a folder: images", choices=INPUT_FORMATS, group=_LAYOUT)
    image_column: str = option(sig.EXAMPLE_IMAGE_FEATURE, "--image-column", "Parquet column of encoded PNG/JPEG bytes; "
                               "without it, the columns pixel0..pixel783", metavar="NAME", group=_LAYOUT)
    label_column: str = option(sig.EXAMPLE_LABEL_FEATURE, "--label-column", "Parquet and CSV, optional",
                               metavar="NAME", group=_LAYOUT)
    key_column: str = option(sig.EXAMPLE_KEY_FEATURE, "--key-column", "Parquet and CSV, optional", metavar="NAME",
                             group=_LAYOUT)
    server: str | None = option(None, "--server", "score with the model this server serves instead of a local "
                                "SavedModel: HOST:PORT for TF Serving's gRPC API, http(s)://HOST:PORT for its REST "
                                "API", metavar="HOST:PORT|URL", group=_SERVER)
    server_model: str | None = option(None, "--server-model", "the served model's name",
                                      none="the dataset's model name, as push's", metavar="NAME", group=_SERVER)
    server_version: int | None = option(None, "--server-version", "a version", none="the server's choice",
                                        metavar="N", group=_SERVER, exclusive="version")
    server_version_label: str | None = option(None, "--server-version-label", "a version label", metavar="LABEL",
                                              group=_SERVER, exclusive="version")
    server_timeout: float = option(30.0, "--server-timeout", "deadline of one batch's request, seconds",
                                   metavar="S", group=_SERVER)
    server_retries: int = option(3, "--server-retries", "retries with backoff of a batch answered UNAVAILABLE",
                                 metavar="N", group=_SERVER)
    server_throttle_delay: float = option(1.0, "--server-throttle-delay", "client-side throttling: the wait while "
                                          "recent requests failed, seconds", metavar="S", group=_SERVER)
    server_root_certs: str | None = option(None, "--server-root-certs", "TLS: CA certificates", metavar="PEM",
                                           group=_SERVER)
    server_cert: str | None = option(None, "--server-cert", "mutual TLS: client certificate chain", metavar="PEM",
                                     group=_SERVER)
    server_key: str | None = option(None, "--server-key", "mutual TLS: client private key", metavar="PEM",
                                    group=_SERVER)
    job_timeout: float | None = option(None, "--job-timeout", "fail the job when it has not finished after S "
                                       "seconds (e.g. no SDK worker started)", metavar="S")
    engine: str = option("beam", "--engine", "beam: RunInference on any Beam runner; spark: the Spark engine "
                         "(pip install \"mnist-pipeline[spark]\", Java 17)", choices=ENGINES, group=_ENGINE)
    spark_master: str | None = option(None, "--spark-master", "--engine spark: local[N] or spark://HOST:PORT",
                                      none="local[*]", metavar="URL", group=_ENGINE)

    def check(self) -> None:
        check_finite(self.SECTION, self)
        if self.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"score.output_format {self.output_format!r} is unknown; choose one of "
                              f"{', '.join(OUTPUT_FORMATS)}")
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"score.input_format {self.input_format!r} is unknown; choose one of "
                              f"{', '.join(INPUT_FORMATS)}")
        if self.engine not in ENGINES:
            raise ConfigError(f"score.engine {self.engine!r} is unknown; choose one of {', '.join(ENGINES)}")
        if self.min_batch_size < 1 or self.max_batch_size < self.min_batch_size:
            raise ConfigError("score batch sizes must satisfy 1 <= min_batch_size <= max_batch_size, "
                              f"got {self.min_batch_size}, {self.max_batch_size}")


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


def flag_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(ScoreConfig) if f.metadata.get("flag"))


def add_arguments(parser: argparse.ArgumentParser, *, dest_prefix: str = "", suppress_defaults: bool = False,
                  skip: Iterable[str] = (), required: Iterable[str] = (),
                  defaults: Mapping[str, Any] | None = None, none: Mapping[str, str] | None = None) -> None:
    """A flag per `ScoreConfig` field that has one, writing `args.<dest_prefix><field>`. `suppress_defaults`:
    a flag not given sets nothing (the config's value stays); `defaults` replaces field defaults, `none` what
    their help says a None default means."""
    hints = typing.get_type_hints(ScoreConfig)
    skip, required, defaults, none = set(skip), set(required), dict(defaults or {}), dict(none or {})
    groups: dict[str | None, Any] = {None: parser}
    exclusive: dict[tuple[str | None, str], Any] = {}
    for f in flag_fields():
        if f.name in skip:
            continue
        meta = f.metadata
        default = defaults.get(f.name, f.default)
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        group = groups[meta["group"]]
        if meta["exclusive"] and f.name not in required:  # argparse: a required flag is in no such group
            key = (meta["group"], meta["exclusive"])
            if key not in exclusive:
                exclusive[key] = group.add_mutually_exclusive_group()
            group = exclusive[key]
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        meaning = none.get(f.name, meta["none"])
        shown = (f"default: {meaning}" if meaning else "") if default is None else f"default {default}"
        help_ = meta["help"] if f.name in required or not shown else f"{meta['help']} ({shown})"
        kwargs: dict[str, Any] = {"required": True} if f.name in required else {}
        if kind is bool:  # a switch: given, it sets True
            kwargs.update(action="store_const", const=True)
        else:  # choices are shown, and checked by check() as the TOML key is: one line naming them, exit 1
            choices = meta["choices"] and "{" + ",".join(meta["choices"]) + "}"
            kwargs.update(type=kind, metavar=choices or meta["metavar"])
        group.add_argument(meta["flag"], dest=dest_prefix + f.name, help=help_,
                           default=argparse.SUPPRESS if suppress_defaults else default, **kwargs)


def from_args(args: argparse.Namespace, **values: Any) -> ScoreConfig:
    """The `ScoreConfig` of the flags `add_arguments` (without a prefix) added, plus `values`; checked."""
    given = {f.name: getattr(args, f.name) for f in flag_fields() if hasattr(args, f.name)}
    config = ScoreConfig(**{**given, **values})
    config.check()
    return config


def from_config(config: ScoreConfig) -> JobOptions:
    """The job's options from a resolved `score` section (its server model named: the dataset's by default)."""
    server = None
    if config.server:
        if config.server_model is None:
            raise ConfigError("score.server_model is not set; pipeline.config.resolve_defaults gives the dataset's "
                              "model name, or pass --server-model")
        server = ServerRef(config.server, model_name=config.server_model, version=config.server_version,
                           version_label=config.server_version_label, timeout=config.server_timeout,
                           retries=config.server_retries, throttle_delay_s=config.server_throttle_delay,
                           root_certificates=config.server_root_certs, certificate_chain=config.server_cert,
                           private_key=config.server_key)
    return JobOptions(input_format=config.input_format,
                      columns=Columns(config.image_column, config.label_column, config.key_column),
                      server=server, timeout_s=config.job_timeout, engine=config.engine,
                      spark_master=config.spark_master)
