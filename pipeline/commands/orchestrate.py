"""`mnist-pipeline orchestrate airflow|kfp|task`: the pipeline for an orchestrator, and the command its tasks run."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import ConfigError

NAME = "orchestrate"
HELP = "write the pipeline as an Airflow DAG or a Kubeflow Pipelines (Vertex AI) YAML; one task per stage"
DESCRIPTION = """\
Generate the pipeline for an orchestrator from the stage table `run` uses: one task per stage, each waiting
for the stages whose outputs it takes. Each task runs `mnist-pipeline orchestrate task --stage STAGE` in one
pipeline run per DAG run (in the workdir), so it is locked, recorded, cached and resumable like `run`.

  mnist-pipeline orchestrate airflow --output dags/ --config pipeline.toml --workdir /data/mnist
        an Airflow 3 DAG file (dags/mnist_pipeline.py): copy it into Airflow's dags/ folder
  mnist-pipeline orchestrate kfp --output pipeline.yaml --image REGISTRY/mnist-pipeline:TAG
        Kubeflow Pipelines v2 IR YAML, for KFP 2 or Vertex AI Pipelines (image: pipeline/orchestrate/Dockerfile)

The configuration (--config, --workdir) is baked in as the defaults of the DAG's / pipeline's parameters
workdir and config. Running the files needs the extras: pip install 'mnist-pipeline[airflow]' or '[kfp]'.
See docs/orchestrators.md."""

log = logging.getLogger(__name__)

TARGETS = ("airflow", "kfp", "task")


def _stage_list(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=TARGETS,
                        help="airflow (a DAG file), kfp (a pipeline YAML), or task (what a generated task runs)")
    gen = parser.add_argument_group("generation (airflow, kfp)")
    gen.add_argument("--output", metavar="PATH",
                     help="airflow: the folder to write <dag id>.py in; kfp: the YAML file to write")
    gen.add_argument("--stages", type=_stage_list, action="extend", metavar="A,B", help="only these stages")
    gen.add_argument("--skip", type=_stage_list, action="extend", default=[], metavar="A,B",
                     help="leave these stages out")
    gen.add_argument("--name", default=None, metavar="NAME",
                     help="the DAG id (default mnist_pipeline) or the KFP pipeline name (default mnist-pipeline)")
    gen.add_argument("--retries", type=int, default=2, metavar="N", help="retries of a failed task (default 2)")
    gen.add_argument("--schedule", default=None, metavar="CRON",
                     help="airflow: the DAG's schedule, e.g. '@daily' (default: none, triggered by hand or API)")
    gen.add_argument("--image", default=None, metavar="IMAGE",
                     help="kfp: the container image of every task (default mnist-pipeline:latest)")
    task = parser.add_argument_group("task (run by the generated tasks)")
    task.add_argument("--stage", metavar="STAGE", help="the stage to run")
    task.add_argument("--orchestrator", choices=("airflow", "kfp"), help="the orchestrator running the task")
    task.add_argument("--dag-run", metavar="ID", help="the orchestrator's DAG run (pipeline job) id; names the run")
    task.add_argument("--task", dest="task_name", metavar="ID", help="the orchestrator's task id (recorded)")
    task.add_argument("--attempt", type=int, default=None, metavar="N", help="the task's try number (recorded)")
    task.add_argument("--config-json", metavar="JSON", help="the configuration sections as generated (JSON)")
    task.add_argument("--no-cache", action="store_true", help="run the stage even when a cached result exists")


def _absolute(config: Config) -> Config:
    """Local paths made absolute: a task runs in a working directory of the orchestrator's choosing."""

    def local(path: str | None) -> str | None:
        return path if path is None or "://" in path else os.fspath(Path(path).expanduser().resolve())

    data = dataclasses.replace(config.data, source_dir=local(config.data.source_dir))
    push = dataclasses.replace(config.push, model_base_path=local(config.push.model_base_path))
    return dataclasses.replace(config, workdir=local(os.fspath(config.workdir)), data=data, push=push)


def _generate(config: Config, args: argparse.Namespace) -> int:
    from pipeline.orchestrate import stage_graph
    from pipeline.runner import code_version
    from pipeline.stages import default_stages

    if not args.output:
        raise ConfigError(f"orchestrate {args.target} needs --output PATH (where to write the "
                          f"{'DAG file' if args.target == 'airflow' else 'pipeline YAML'})")
    wrong = "--image" if args.target == "airflow" and args.image else \
        "--schedule" if args.target == "kfp" and args.schedule else None
    if wrong:
        raise ConfigError(f"{wrong} does not apply to orchestrate {args.target} (--image: kfp; --schedule: airflow; "
                          "a KFP schedule is made where the YAML is submitted)")
    if args.retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {args.retries}")
    tasks = stage_graph(default_stages(), args.stages, args.skip)
    config = _absolute(config)
    output = Path(args.output)
    if args.target == "airflow":
        from components.params import check_name
        from pipeline.orchestrate.airflow import write_dag

        dag_id = check_name("--name (the DAG id)", args.name or "mnist_pipeline")
        path = write_dag(config, tasks, output, dag_id=dag_id, code=code_version(), retries=args.retries,
                         schedule=args.schedule)
    else:
        from pipeline.orchestrate.kfp import DEFAULT_IMAGE, compile_pipeline

        path = compile_pipeline(config, tasks, output, name=args.name or "mnist-pipeline",
                                image=args.image or DEFAULT_IMAGE, retries=args.retries)
    log.info("wrote %s", path)
    print(f"{args.target}: wrote {path} ({len(tasks)} tasks: {', '.join(t.stage for t in tasks)}; workdir {config.workdir})")
    return 0


def _task(config: Config, args: argparse.Namespace) -> int:
    from pipeline.orchestrate import config_from_json, run_task

    missing = [flag for flag, value in (("--stage", args.stage), ("--orchestrator", args.orchestrator),
                                        ("--dag-run", args.dag_run)) if not value]
    if missing:
        raise ConfigError(f"orchestrate task needs {', '.join(missing)} (the generated DAG or YAML passes them)")
    if args.config_json is not None:
        config = config_from_json(args.config_json, os.fspath(config.workdir))
    run_id, record = run_task(config, args.stage, orchestrator=args.orchestrator, dag_run=args.dag_run,
                              task=args.task_name or args.stage, attempt=args.attempt, use_cache=not args.no_cache)
    detail = record.reason or ", ".join(a.uri for a in record.outputs.values())
    print(f"run {run_id}: {record.name} {record.status} in {record.duration:.1f}s  {detail}")
    return 0


def run(config: Config, args: argparse.Namespace) -> int:
    if args.target == "task":
        return _task(config, args)
    return _generate(config, args)
