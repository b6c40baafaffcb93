"""`mnist-pipeline score`: batch scoring with Apache Beam RunInference (local FnApiRunner, or any runner)."""

from __future__ import annotations

import argparse
import logging

from pipeline.cli import config_flag, model_name_flag
from pipeline.commands._runs import add_stage_arguments, run_stages
from pipeline.config import Config

NAME = "score"
HELP = "score a TFDS split, TFRecord, Parquet, CSV or image files with a SavedModel or a served model (Beam)"
DESCRIPTION = """\
Run RunInference over the examples and write one row per example (key, predicted class, probabilities,
label when present, model name and version), a dead-letter output of records that cannot be scored, and
summary.json (counts, accuracy and confusion matrix when labels are present, Beam metrics):

  <output>/predictions-SSSSS-of-NNNNN.{jsonl,csv,parquet}   <output>/failed-SSSSS-of-NNNNN.jsonl
  <output>/summary.json        (default output: <workdir>/runs/<run id>/score)

  mnist-pipeline score                                  # the test split with the newest pushed model
  mnist-pipeline score --input 'samples/test-*.tfrecord' --format parquet --model path/to/saved_model
  mnist-pipeline score --input 'samples/test-*.parquet'  # or *.csv (Kaggle's layout), or a folder of PNGs
  mnist-pipeline score --input 'samples/test-*.csv' --server localhost:8500   # through TF Serving's gRPC API
  mnist-pipeline score --direct_num_workers=2 --direct_running_mode=multi_processing

On Spark (the [spark] extra and Java 17): --engine spark [--spark-master spark://HOST:7077] (default local[*]).

Any other flag is a Beam pipeline option and is passed through unchanged (--runner=DataflowRunner
--project P --region R --temp_location gs://B/tmp; --runner=FlinkRunner --flink_master=HOST:8081 ...).
Without --runner the job runs on Beam's FnApiRunner."""

# Unknown flags are Beam pipeline options: pipeline.cli hands them over as args.beam_args.
PASSTHROUGH_UNKNOWN_ARGS = True

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_flag(parser, "--model", key="score.model", metavar="PATH",
                help="SavedModel folder, or model base path <base>/<model> (its newest version); "
                     "default: the workdir's pushed model")
    model_name_flag(parser)
    source = parser.add_mutually_exclusive_group()
    config_flag(source, "--input", key="score.input_pattern", metavar="PATTERN",
                help="file pattern or folder: TFRecord of tf.Example, Parquet, CSV (Kaggle's layout) or "
                     "image files; the format comes from the extension or --input-format")
    config_flag(source, "--split", key="score.split", metavar="NAME",
                help="a split of the workdir's TFDS dataset (default: test)")
    parser.add_argument("--output", metavar="DIR", default=None,
                        help="output folder, local or gs://... (default: <workdir>/runs/<run id>/score)")
    config_flag(parser, "--format", key="score.output_format", metavar="FORMAT",
                help="jsonl (default), csv or parquet")
    config_flag(parser, "--min-batch-size", key="score.min_batch_size", type=int, metavar="N",
                help="smallest batch RunInference sends to the model (default 1)")
    config_flag(parser, "--max-batch-size", key="score.max_batch_size", type=int, metavar="N",
                help="largest batch RunInference sends to the model (default 256)")
    g = parser.add_argument_group("input layout (README: Batch scoring with Beam)")
    config_flag(g, "--input-format", key="score.input_format", choices=("tfrecord", "parquet", "csv", "images"),
                help="default: from the extension (a folder: images)")
    config_flag(g, "--image-column", key="score.image_column", metavar="NAME",
                help="Parquet column of encoded PNG/JPEG bytes (default image; else pixel0..pixel783)")
    config_flag(g, "--label-column", key="score.label_column", metavar="NAME", help="optional (default label)")
    config_flag(g, "--key-column", key="score.key_column", metavar="NAME", help="optional (default key)")
    s = parser.add_argument_group("scoring through a served model (TF Serving's gRPC or REST API)")
    config_flag(s, "--server", key="score.server", metavar="HOST:PORT|URL",
                help="score with the model this server serves instead of a local SavedModel: HOST:PORT for "
                     "TF Serving's gRPC API, http(s)://HOST:PORT for its REST API")
    config_flag(s, "--server-model", key="score.server_model", metavar="NAME", help="model name (default mnist)")
    config_flag(s, "--server-version", key="score.server_version", type=int, metavar="N",
                help="a version (default: the server's choice)")
    config_flag(s, "--server-version-label", key="score.server_version_label", metavar="LABEL", help="a version label")
    config_flag(s, "--server-timeout", key="score.server_timeout", type=float, metavar="S",
                help="deadline of one batch's request (default 30)")
    config_flag(s, "--server-retries", key="score.server_retries", type=int, metavar="N",
                help="retries with backoff of a batch answered UNAVAILABLE (default 3)")
    config_flag(s, "--server-throttle-delay", key="score.server_throttle_delay", type=float, metavar="S",
                help="client-side throttling: the wait while recent requests failed (default 1)")
    config_flag(s, "--server-root-certs", key="score.server_root_certs", metavar="PEM", help="TLS: CA certificates")
    config_flag(s, "--server-cert", key="score.server_cert", metavar="PEM", help="mutual TLS: client certificate")
    config_flag(s, "--server-key", key="score.server_key", metavar="PEM", help="mutual TLS: client key")
    config_flag(parser, "--job-timeout", key="score.job_timeout", type=float, metavar="S",
                help="fail the job when it has not finished after S seconds (e.g. no SDK worker started)")
    e = parser.add_argument_group("engine (README: Batch scoring on Spark)")
    config_flag(e, "--engine", key="score.engine", choices=("beam", "spark"),
                help="beam (RunInference on any Beam runner; default) or spark (pip install \"mnist-pipeline[spark]\")")
    config_flag(e, "--spark-master", key="score.spark_master", metavar="URL",
                help="--engine spark: local[N] or spark://HOST:PORT (default local[*])")
    add_stage_arguments(parser, needs=None)


def run(config: Config, args: argparse.Namespace) -> int:
    import dataclasses

    beam_args = tuple(getattr(args, "beam_args", None) or ())
    if args.output or beam_args:
        config = dataclasses.replace(config, score=dataclasses.replace(
            config.score, output=args.output or config.score.output, beam_args=beam_args or config.score.beam_args))
    run_id, records = run_stages(config, args, ["score"], needs=None)
    p = records["score"].properties
    version = "" if p.get("model_version") is None else f" version {p['model_version']}"
    print(f"run {run_id}: scored {p['num_predictions']} examples with {p['model_name']}{version} ({p['model']}) "
          f"in {p['seconds']:.1f} s; {p['num_failed']} failed (read {p.get('num_read')}, {p.get('input_format')})")
    if p.get("accuracy") is not None:
        print(f"  accuracy:    {p['accuracy']:.4f}")
    print(f"  predictions: {p['predictions']}")
    print(f"  failed:      {p['failed']}")
    print(f"  summary:     {p['summary']}")
    metrics = p.get("metrics") or {}
    counters = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    if counters:
        print("  metrics:     " + ", ".join(f"{k}={v}" for k, v in counters.items()))
    for name, dist in metrics.items():
        if isinstance(dist, dict):
            print(f"               {name}: mean {dist['mean']:.1f} min {dist['min']} max {dist['max']} "
                  f"(n={dist['count']})")
    return 0
