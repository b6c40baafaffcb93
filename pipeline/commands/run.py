"""`mnist-pipeline run`: the whole pipeline, recorded, cached and locked (see `pipeline.runner`)."""

from __future__ import annotations

import argparse
import logging

from components.model import PRECISIONS, architectures
from components.score.options import OUTPUT_FORMATS
from pipeline.cli import config_flag, dataset_flag, model_name_flag, per_dataset
from pipeline.config import Config

NAME = "run"
HELP = "the whole pipeline: ingest, validate, train, export, evaluate, push, score, serving check, report"
DESCRIPTION = """\
Run every stage in order, each recorded in <workdir>/metadata.sqlite (see `mnist-pipeline runs` and
`mnist-pipeline lineage VERSION`), each writing under <workdir>/runs/<run id>/<stage>/:

  ingest, validate, train, export, evaluate, push (when blessed), score (Beam over the test split),
  serving_check (the local gRPC server over the pushed model, queried with the client), report

  offline:  mnist-pipeline run --source-dir ../shared/data/mnist
  online:   mnist-pipeline run

A stage whose configuration and inputs are unchanged since an earlier run reuses that run's outputs
("cached: reusing ..."); --no-cache reruns everything. A run that failed or was interrupted continues from
its last finished stage with --resume (or, as a new run, through the cache). Open
<workdir>/runs/<run id>/report/report.html afterwards.

Any other flag must be a Beam pipeline option, for the score stage (--direct_num_workers=2, --runner=...);
one that Beam's option classes do not know is refused, naming the closest known flag. Arguments after a
bare -- go to Beam unchecked."""

# Unknown flags are Beam pipeline options of the score stage: pipeline.cli checks them and sets score.beam_args.
BEAM_OPTIONS = True

log = logging.getLogger(__name__)


def _stage_list(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stages = parser.add_argument_group("stages")
    stages.add_argument("--stages", type=_stage_list, action="extend", metavar="A,B",
                        help="run only these stages (in pipeline order); inputs of the others come from earlier runs")
    stages.add_argument("--skip", type=_stage_list, action="extend", default=[], metavar="A,B",
                        help="leave these stages out")
    stages.add_argument("--no-cache", action="store_true", help="rerun every stage even when a cached result exists")
    stages.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                        help="continue a failed or interrupted run (default: the latest one) with its recorded configuration")
    stages.add_argument("--wait", action="store_true",
                        help="if another run holds the workdir, wait for it instead of refusing")
    data = parser.add_argument_group("data")
    dataset_flag(data, "the TFDS dataset; sets the default model name and blessing threshold")
    config_flag(data, "--source-dir", key="data.source_dir", metavar="DIR",
                help="folder of the four IDX .gz files (offline); default: the TFDS download")
    train = parser.add_argument_group("training")
    config_flag(train, "--architecture", key="train.architecture", choices=architectures(),
                help="default (99.64-99.66%% over seeds 0-2) or seed (the tutorial CNN)")
    config_flag(train, "--epochs", key="train.epochs", type=int, metavar="N", help="default: the architecture's recipe")
    config_flag(train, "--batch-size", key="train.batch_size", type=int, metavar="N")
    config_flag(train, "--learning-rate", key="train.learning_rate", type=float, metavar="LR")
    config_flag(train, "--max-train-examples", key="train.max_train_examples", type=int, metavar="N",
                help="train on the first N examples only (smoke runs)")
    config_flag(train, "--seed", key="train.seed", type=int, metavar="N", help="random seed (default 42)")
    config_flag(train, "--precision", key="train.precision", choices=PRECISIONS,
                help="training's compute dtype (default: the recipe's; default's is auto: mixed_bfloat16 where "
                     "the hardware computes it natively, else float32); the saved model computes in float32")
    ev = parser.add_argument_group("evaluation and push")
    config_flag(ev, "--accuracy-threshold", key="evaluate.accuracy_threshold", type=float, metavar="A",
                help=f"bless only at this test accuracy or better (default: the dataset's: "
                     f"{per_dataset('accuracy_threshold')})")
    model_name_flag(ev, dataset=False)
    config_flag(ev, "--model-base-path", key="push.model_base_path", metavar="DIR",
                help="where versions are pushed (default: <workdir>/serving/models)")
    config_flag(ev, "--force-push", key="push.force", action="store_const", const=True,
                help="push even when the model is not blessed")
    sc = parser.add_argument_group("batch scoring")
    config_flag(sc, "--output-format", key="score.output_format", choices=OUTPUT_FORMATS,
                help="format of the score stage's predictions (default jsonl)")


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline import paths
    from pipeline.runner import run_pipeline
    from pipeline.stages import default_stages

    result = run_pipeline(config, default_stages(), stages=args.stages, skip=args.skip, use_cache=not args.no_cache,
                          resume=args.resume, wait=args.wait)
    print(f"run {result.run_id}: {result.status} in {result.duration:.1f}s")
    for stage in result.stages:
        detail = stage.reason or ", ".join(f"{a.uri}" for a in stage.outputs.values())
        print(f"  {stage.name:<14} {stage.status:<9} {stage.duration:7.1f}s  {detail}")
    report = result.stage("report")
    if report is not None and "report" in report.outputs:
        print(f"report: {report.outputs['report'].uri}")
    print(f"records: mnist-pipeline runs --workdir {config.workdir}  (store {paths.store_path(config.workdir)})")
    return 0
