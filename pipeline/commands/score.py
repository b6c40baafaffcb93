"""`mnist-pipeline score`: batch scoring with Apache Beam RunInference (local FnApiRunner, or any runner)."""

from __future__ import annotations

import argparse
import logging

from components.score import options
from pipeline.cli import model_name_flag
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

Any other flag must be a Beam pipeline option, and is passed through (--runner=DataflowRunner --project P
--region R --temp_location gs://B/tmp; --runner=FlinkRunner --flink_master=HOST:8081 ...); one that Beam's
option classes do not know is refused, naming the closest known flag. Arguments after a bare -- go to Beam
unchecked. Without --runner the job runs on Beam's FnApiRunner. The server's model name follows --dataset,
as push's does."""

# Unknown flags are Beam pipeline options: pipeline.cli checks them against Beam's and sets score.beam_args.
BEAM_OPTIONS = True

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The score flags are generated from the [score] section's one definition (components.score.options).
    options.add_arguments(parser, dest_prefix="score.", suppress_defaults=True)
    model_name_flag(parser)
    add_stage_arguments(parser, needs=None)


def run(config: Config, args: argparse.Namespace) -> int:
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
